"""Every config shipped in examples/ loads and validates as a whole, as a user would copy it, and
the commands its header tells the user to run are commands and options the CLI has, in an order
that works (the data one step prepares is the data the next one reads, or data kept in the
repository, as examples/guard.yaml's data/guard/)."""
import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from tunelab.cli import app
from tunelab.config import load_config
from tunelab.graders import load_grader
from tunelab.train.stages import planned_stages

EXAMPLES = Path(__file__).parents[2] / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))
# a command the header shows on its own comment line, or inline between backticks; "..." marks an
# elided command ("tunelab eval ... --gate"), which is prose rather than something to run
COMMAND_LINE = re.compile(r"^#\s+(?:Run with:\s+)?(tunelab\s.+)$")
INLINE_COMMAND = re.compile(r"`(tunelab\s[^`]+)`")


def header_commands(path: Path) -> list[list[str]]:
    commands = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            continue
        found = [m.group(1) for m in (COMMAND_LINE.match(stripped),) if m and "`" not in m.group(1)]
        found += INLINE_COMMAND.findall(stripped)
        commands += [shlex.split(c)[1:] for c in found if "..." not in c]
    return commands


def parse_command(args: list[str]) -> tuple[str, dict]:
    """(dotted command name, parsed parameters) as click parses them, without running anything."""
    command = typer.main.get_command(app)
    names = []
    while hasattr(command, "commands"):  # a group (typer vendors its own click: no isinstance check)
        names.append(args[0])
        command, args = command.commands[args[0]], args[1:]
    ctx = command.make_context(" ".join(["tunelab", *names]), list(args))
    return " ".join(names), ctx.params


def test_the_examples_are_there():
    names = {p.name for p in CONFIGS}
    assert {"chat_lora.yaml", "dpo_after_sft.yaml", "progressive.yaml", "multitask.yaml", "sentiment.yaml",
            "rft.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_validates(path):
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "train" in raw:
        planned_stages(cfg.train)  # data, stages and mix do not contradict each other


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_launcher_configs_beside_them_parse(path):
    """examples/accelerate/ holds `accelerate launch` configs, not tunelab ones: valid YAML mappings."""
    assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_header_commands_run_in_order(path):
    """Each shown command parses with the real CLI; every YAML it names exists; the directories the
    config trains on are ones its `data prepare` lines write (or a run directory of the steps)."""
    commands = [parse_command(args) for args in header_commands(path)]
    assert commands, f"{path.name} shows no command to run"
    for name, params in commands:
        for value in [*(params.get("args") or []), params.get("config")]:
            if value is not None and str(value).endswith((".yaml", ".yml")):
                assert (EXAMPLES.parent / str(value)).is_file(), f"{path.name}: `tunelab {name}` names {value}"
    train = load_config(path).train
    prepared = {Path(str(p["out_dir"])) for name, p in commands if name == "data prepare"}
    trained_from = [Path(s.data) for s in planned_stages(train)] if train.data or train.stages else []
    trained_from += [Path(m.data) for m in train.mix]
    produced_by_steps = prepared | {Path(a.split("=", 1)[1]) for name, p in commands if name == "train"
                                    for a in (p.get("args") or []) if a.startswith("train.output_dir=")}
    committed = {p for p in trained_from if (EXAMPLES.parent / p / "train.jsonl").is_file()}  # data kept in the repo
    assert set(trained_from) <= prepared | committed, (f"{path.name} trains on {trained_from}; its header prepares "
                                                       f"{prepared}")
    if train.model.startswith(("runs/", "./")):  # starts from an earlier run: one of the steps writes it
        assert Path(train.model) in produced_by_steps, f"{path.name}: nothing shown writes {train.model}"


def test_what_the_examples_declare():
    chat = load_config(EXAMPLES / "chat_lora.yaml")
    assert (chat.train.method, chat.train.model, chat.train.assistant_only_loss) == (
        "lora", "Qwen/Qwen2.5-0.5B-Instruct", True)
    # the data step rejects what training would truncate, with the tokenizer training uses
    assert (chat.data.tokenizer, chat.data.max_tokens) == (chat.train.model, chat.train.max_length)
    assert chat.serve.model == chat.train.output_dir and chat.eval.baselines == ["base"]
    assert chat.serve.default_max_tokens <= chat.serve.guard.max_tokens
    # the gate names metrics a generative report has (a name no report holds is refused at --gate)
    from tunelab.evaluate.gate import DERIVED_METRICS
    from tunelab.evaluate.metrics import generative_metrics
    reported = set(generative_metrics(["it is 2"], ["it is 2"])) | set(DERIVED_METRICS)
    assert set(chat.eval.gate.min) | set(chat.eval.gate.max) <= reported
    dpo = load_config(EXAMPLES / "dpo_after_sft.yaml").train
    assert (dpo.task, dpo.model, dpo.dpo.loss_type) == ("dpo", "runs/sft", "sigmoid")
    progressive = load_config(EXAMPLES / "progressive.yaml").train
    assert [s.name for s in planned_stages(progressive)] == ["general", "domain", "style"]
    rft = load_config(EXAMPLES / "rft.yaml").train
    assert [(s.name, s.task) for s in planned_stages(rft)] == [("sft", None), ("rft", None)]  # tasks from the data
    grader = load_grader(str(EXAMPLES.parent / rft.grader))  # the grader the example names is valid
    assert (grader.type, sorted(grader.graders)) == ("multi", ["close", "exact"])
    assert (rft.batch_size * rft.grad_accum) % rft.rft.num_generations == 0
    multitask = load_config(EXAMPLES / "multitask.yaml").train
    assert {m.task: m.weight for m in multitask.mix} == {"summarize": 5, "reply": 3, "intent": 2}
    assert all(m.prefix for m in multitask.mix)
