"""The Kafka adapter layer: configured clients, compacted state, run control, the run producer."""
