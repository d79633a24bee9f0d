"""`make check-generated` (model_registry.generated): every generated file is rendered again and
compared whole, so a hand edit inside one, a missing one or a stray one fails the check, named."""

from __future__ import annotations

import json
from pathlib import Path

from model_registry import events, generated, template
from model_registry.registry import Project, exported


def names(found: list[generated.Difference], project: Project) -> dict[str, str]:
    return {str(item.path.relative_to(project.root)): item.reason for item in found}


def test_the_tree_copy_is_up_to_date_and_rendering_it_twice_gives_the_same_bytes(
        project: Project) -> None:
    locate = exported(project.models_dir)
    assert generated.differences(project, locate) == []
    assert generated.expected(project, locate) == generated.expected(project, locate)


def test_a_hand_edit_inside_a_generated_file_is_found_and_named(project: Project) -> None:
    # Given a copy of the tree whose event body, template and OpenAPI document were edited by hand
    event_path = project.events / "breast-cancer-mlp" / "infer.json"
    event = json.loads(event_path.read_text())
    event["body"] = "e30="  # {}
    event_path.write_text(json.dumps(event, indent=2) + "\n")
    root = project.template.read_text()
    project.template.write_text(root.replace("Handler: app.lambda_handler",
                                             "Handler: app.other_handler", 1))
    project.openapi.write_text(project.openapi.read_text().replace("Unknown model", "No model"))
    # and a stray event, and a group stack gone
    (project.events / "server" / "old-route.json").write_text("{}\n")
    (project.root / template.group_file(0)).unlink()
    # When the check runs
    found = generated.differences(project, exported(project.models_dir))
    # Then it names each file, why, the command that writes it, and shows the edited lines
    assert names(found, project) == {
        "events/breast-cancer-mlp/infer.json": "differs",
        "template.yaml": "differs",
        "docs/openapi.json": "differs",
        "events/server/old-route.json": "not generated",
        "stacks/models-0.yaml": "missing",
    }
    report = generated.report(project, found)
    assert "events/breast-cancer-mlp/infer.json: differs: run `make events`" in report
    assert "template.yaml: differs: run `make template`" in report
    assert "docs/openapi.json: differs: run `make openapi`" in report
    assert '-  "body": "e30=",' in report
    assert any(line.startswith("-") and line.endswith("Handler: app.other_handler")
               for line in report.splitlines())


def test_the_hand_written_files_among_the_events_are_not_checked(project: Project) -> None:
    hand = [project.events / name for name in events.HAND_WRITTEN]
    assert all(path.exists() for path in hand)
    for path in hand:
        path.write_text(path.read_text() + "\n")
    assert generated.differences(project, exported(project.models_dir)) == []


def test_the_source_holds_no_generated_text_and_the_generated_files_say_so() -> None:
    source = template.SOURCE.read_text()
    assert ">>>" not in source and "ModelsGroup0" not in source
    for path in (template.TEMPLATE, *sorted(Path(template.ROOT, "stacks").glob("*.yaml"))):
        head = "".join(path.read_text().splitlines(keepends=True)[:2])
        assert "generated from" in head and "by `make template`" in head, path
