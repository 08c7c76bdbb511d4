"""A pipeline's DAG for people: a text tree for the terminal and Mermaid for docs."""

from __future__ import annotations

from rich.tree import Tree

from shared.pipeline import SEEDS_STAGE, PipelineSpec


def _label(spec: PipelineSpec, stage: str) -> str:
    if stage == SEEDS_STAGE:
        return "seeds"
    step = spec.step(stage)
    text = f"{stage} [dim]({step.step})[/]"
    if stage in spec.leaves:
        text += " [green]leaf[/]"
    return text


def _edge(spec: PipelineSpec, source: str, target: str) -> str | None:
    """What a route lets through from `source` to `target` (None: everything)."""
    if source == SEEDS_STAGE:
        return None
    route = spec.step(source).route
    if route is None:
        return None
    if isinstance(route, str):
        return f"route {route}"
    condition = route[target]
    test = next(n for n in ("equals", "not_equals", "in_", "not_in") if n in condition.model_fields_set)
    return f"{condition.field} {test.rstrip('_').replace('_', ' ')} {getattr(condition, test)!r}"


def text_tree(spec: PipelineSpec) -> Tree:
    """Every stage under its first input; under its other inputs it shows as a reference."""
    tree = Tree(_label(spec, SEEDS_STAGE))

    def grow(node: Tree, stage: str) -> None:
        for successor in spec.successors(stage):
            inputs = spec.inputs(successor)
            edge = _edge(spec, stage, successor)
            prefix = f"[yellow]{edge}[/] → " if edge else ""
            if inputs[0] != stage:
                node.add(f"{prefix}{successor} [dim](also reads this; shown under {inputs[0]})[/]")
                continue
            others = [i for i in inputs if i != stage]
            suffix = f" [dim]+ reads {', '.join(others)}[/]" if others else ""
            grow(node.add(prefix + _label(spec, successor) + suffix), successor)

    grow(tree, SEEDS_STAGE)
    return tree


def mermaid(spec: PipelineSpec) -> str:
    lines = ["flowchart TD"]
    for stage in spec.stages:
        shape = (
            f'{stage}[("{stage}")]'
            if stage == SEEDS_STAGE
            else f'{stage}["{stage}<br/>{spec.step(stage).step}"]'
        )
        lines.append(f"    {shape}")
    for stage in spec.stages:
        for successor in spec.successors(stage):
            edge = _edge(spec, stage, successor)
            arrow = f' -- "{edge}" --> ' if edge else " --> "
            lines.append(f"    {stage}{arrow}{successor}")
    return "\n".join(lines) + "\n"
