"""evol_instruct: instructions made more complex, round by round (WizardLM)."""
