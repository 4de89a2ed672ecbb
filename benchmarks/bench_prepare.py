"""Claim: `tunelab data prepare` handles 100k chat records with 5% near duplicates (validate,
clean, PII, exact + near dedup, split, leakage check, report) in under 60 s on 2 cores.

Baseline, measured in the same run on the same file: a plain `datasets` pass doing validation
only (load_dataset("json") + map + filter). Prints records/s for both and their ratio.
Run: make bench   (or: python benchmarks/bench_prepare.py [--records N])
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 60.0


def make_records(n: int, near_dup_share: float, seed: int = 0) -> tuple[list[dict], int]:
    rng = random.Random(seed)
    vocab = [f"{rng.choice('bcdfghklmnprstvz')}{rng.choice('aeiou')}{rng.choice('bcdfglmnprst')}"
             f"{rng.choice('aeiou')}{i}" for i in range(3000)]
    n_dups = int(n * near_dup_share)
    records = []
    for i in range(n - n_dups):
        question = " ".join(rng.choices(vocab, k=rng.randint(12, 30)))
        answer = " ".join(rng.choices(vocab, k=rng.randint(25, 60)))
        if i % 200 == 0:  # some PII to find
            answer += f" Contact support{i}@example.com or +1 415 555 {1000 + i % 9000:04d}."
        records.append({"messages": [{"role": "user", "content": question},
                                     {"role": "assistant", "content": answer}]})
    for _ in range(n_dups):  # a near duplicate: an earlier record with one answer word changed
        original = rng.choice(records[: n - n_dups])
        words = original["messages"][1]["content"].split()
        words[rng.randrange(len(words))] = rng.choice(vocab)
        records.insert(rng.randrange(len(records) + 1), {"messages": [
            dict(original["messages"][0]), {"role": "assistant", "content": " ".join(words)}]})
    return records, n_dups


def baseline_validation_only(path: Path, cache: Path) -> float:
    import datasets
    datasets.disable_progress_bars()

    def valid(example):
        messages = example["messages"]
        ok = isinstance(messages, list) and len(messages) >= 2 and messages[-1]["role"] == "assistant"
        ok = ok and all(isinstance(m["content"], str) and m["content"].strip() for m in messages)
        ok = ok and all(m["role"] == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(messages))
        return {"valid": ok}

    start = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))
    ds = ds.map(valid).filter(lambda e: e["valid"])
    elapsed = time.perf_counter() - start
    assert len(ds) > 0
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    from tunelab.config import DataConfig
    from tunelab.data import prepare

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records, injected = make_records(args.records, 0.05)
        path = tmp / "chat.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))

        base_s = baseline_validation_only(path, tmp / "hf-cache")
        start = time.perf_counter()
        result = prepare.run(DataConfig(), [str(path)], tmp / "out", show_progress=False)
        ours_s = time.perf_counter() - start

    counts = result.report["counts"]
    found = result.report["duplicates_by_kind"].get("near", 0) + result.report["duplicates_by_kind"].get("exact", 0)
    print(f"records: {args.records:,} ({injected:,} near duplicates injected)")
    print(f"baseline datasets map+filter (validation only): {base_s:6.1f} s  {args.records / base_s:10,.0f} records/s")
    print(f"tunelab data prepare (full pipeline):           {ours_s:6.1f} s  {args.records / ours_s:10,.0f} records/s")
    print(f"throughput ratio tunelab/baseline: {base_s / ours_s:.2f}")
    print(f"duplicates found: {found:,} of {injected:,} injected; PII records redacted: {counts['pii_redacted']:,}; "
          f"counts identity holds: {counts['input'] == counts['kept'] + counts['rejected'] + counts['duplicates']}")
    verdict = "PASS" if ours_s < BUDGET_S * args.records / 100_000 else "FAIL"
    print(f"{verdict}: {ours_s:.1f} s against a budget of {BUDGET_S * args.records / 100_000:.0f} s")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
