"""The report's preference section (report.json's "preference", tunelab.evaluate.preference): DPO's
implicit reward on the held-out pairs, with the base as the reference model."""
from __future__ import annotations

from typing import Any

from tunelab.report_shell import Note, Section, Table, format_value


def preference_section(r: dict[str, Any]) -> Section | None:
    reward = r.get("preference")
    if not reward:
        return None
    note = Note(f"A reply's implicit reward is its log-likelihood under the tuned model minus under the "
                f"reference ({reward.get('reference')}), in nats; DPO trains the chosen reply's reward above the "
                f"rejected one's. On {format_value(reward.get('examples'))} held-out pairs the chosen reply gained "
                f"more in {reward['reward_accuracy']:.0%} of them (reward accuracy).")
    table = Table(["reward accuracy", "mean reward margin", "mean chosen reward", "mean rejected reward"],
                  [[reward.get("reward_accuracy"), reward.get("reward_margin"), reward.get("chosen_reward"),
                    reward.get("rejected_reward")]])
    return Section("preference", "Implicit reward (preference pairs)", [note, table])
