"""lm-evaluation-harness against `tunelab serve`, as an outside user runs it:
`lm_eval --model local-completions` (token-id prompts, echo, logprobs; the run directory as its
tokenizer, all offline) on two tiny local tasks, one multiple-choice (log-likelihoods) and one
generate-until, runs to completion; every log-likelihood it computed equals the one plain
transformers gives, and every generation equals plain greedy `generate` cut at the stop.
Skipped only when lm-eval (with its `api` extra) is not installed."""
import json
import signal
import subprocess
import sys

import pytest
import torch

from cli_helpers import ENV, TUNELAB
from serve_helpers import free_port, wait_ready

pytest.importorskip("lm_eval", reason="lm-eval is not installed")
pytest.importorskip("tenacity", reason="lm-eval's api extra is not installed")

MULTIPLE_CHOICE = [{"question": "a b c", "choices": ["d", "x", "q"], "answer": 0},
                   {"question": "one two", "choices": ["three", "five"], "answer": 0},
                   {"question": "red green", "choices": ["blue", "cat", "dog"], "answer": 0},
                   {"question": "x y", "choices": ["z", "a"], "answer": 0}]
GENERATE = [{"question": "abc", "answer": "def"}, {"question": "hello", "answer": "world"},
            {"question": "one", "answer": "two"}]
MC_TASK = """task: tunelab_mc
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}}]
"""
GEN_TASK = """task: tunelab_gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{until: ["\\n"], max_gen_toks: 8, do_sample: false}}
metric_list: [{{metric: exact_match, aggregation: mean, higher_is_better: true}}]
"""


def write_tasks(directory):
    directory.mkdir()
    for name, rows, template in (("mc", MULTIPLE_CHOICE, MC_TASK), ("gen", GENERATE, GEN_TASK)):
        data = directory / f"{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        (directory / f"tunelab_{name}.yaml").write_text(template.format(data=data))
    return directory


def samples(out_dir, task: str) -> list[dict]:
    (path,) = out_dir.rglob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_lm_eval_local_completions_runs_both_kinds_of_task(tiny_llama_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tasks = write_tasks(tmp_path / "tasks")
    port = free_port()
    server = subprocess.Popen([TUNELAB, "serve", str(tiny_llama_run), "--port", str(port), "serve.model_name=tiny",
                               "serve.registry=null", f"serve.prediction_log={tmp_path / 'p.db'}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=tmp_path)
    try:
        base = wait_ready(f"http://127.0.0.1:{port}", server)
        model_args = ",".join([f"base_url={base}/v1/completions", "model=tiny", f"tokenizer={tiny_llama_run}",
                               "tokenizer_backend=huggingface", "tokenized_requests=True", "max_length=256",
                               "max_gen_toks=8", "max_retries=1"])
        evaluation = subprocess.run(
            [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args", model_args,
             "--tasks", "tunelab_mc", "tunelab_gen", "--include_path", str(tasks), "--output_path",
             str(tmp_path / "out"), "--log_samples"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**ENV, "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("results_*.json")
    scores = json.loads(results.read_text())["results"]
    assert set(scores) == {"tunelab_mc", "tunelab_gen"} and "acc,none" in scores["tunelab_mc"]

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_run)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_run).eval()
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731 (as lm-eval does)
    for sample in samples(tmp_path / "out", "tunelab_mc"):
        for arguments, response in zip(sample["arguments"].values(), sample["resps"]):
            context, continuation = arguments["arg_0"], arguments["arg_1"]
            whole, start = encode(context + continuation), len(encode(context))
            with torch.inference_mode():
                logprobs = model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
            expected = sum(float(logprobs[i - 1, whole[i]]) for i in range(start, len(whole)))
            greedy = all(int(logprobs[i - 1].argmax()) == whole[i] for i in range(start, len(whole)))
            assert float(response[0][0]) == pytest.approx(expected, abs=1e-4)
            assert response[0][1] == str(greedy)
    for sample in samples(tmp_path / "out", "tunelab_gen"):
        ids = encode(sample["arguments"]["gen_args_0"]["arg_0"])
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=8,
                                 pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).split("\n")[0]
        assert sample["resps"][0][0] == expected
    from tunelab.serve.predlog import read_predictions
    logged = read_predictions(tmp_path / "p.db")
    assert len(logged) == 10 + 3 and {r["status"] for r in logged} == {200}  # 10 choices, 3 generations
