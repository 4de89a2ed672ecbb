"""The jobs page rendered from OpenAI-shaped objects (tunelab.jobs.page): the jobs table, per job
its status (with its error), loss curves from its metrics events, checkpoints, eval verdict and
the buttons its status allows; every string escaped; the shell holds no job data."""
from __future__ import annotations

from html.parser import HTMLParser

from tunelab.jobs.page import JobView, render_shell, render_view
from tunelab.report_shell import Action, Actions, Section, render_markdown

NOW = 1_800_000_000
EVIL = '<img src=x onerror="alert(1)">'


class Outline(HTMLParser):
    """Each section's text, buttons (label, data-post) and chart shapes; every URL attribute."""

    def __init__(self, page: str):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current = None
        self.links: list[str] = []
        self.button = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = self.sections.setdefault(attrs["id"], {"text": [], "buttons": [], "shapes": {}})
        elif self.current is not None and tag == "button":
            self.button = [attrs.get("data-post")]
        elif self.current is not None and tag in ("svg", "path", "circle", "figure"):
            self.current["shapes"][tag] = self.current["shapes"].get(tag, 0) + 1
            if tag == "figure":
                self.current["figure"] = attrs.get("id")
        self.links += [v for k, v in attrs.items() if k in ("src", "href") and v]

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None
        elif tag == "button" and self.button is not None:
            self.current["buttons"].append(("".join(self.button[1:]), self.button[0]))
            self.button = None

    def handle_data(self, data):
        if self.button is not None:
            self.button.append(data)
        if self.current is not None:
            self.current["text"].append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.sections[section]["text"]).split())


def job(job_id: str, status: str, **fields) -> dict:
    return {"id": job_id, "object": "fine_tuning.job", "created_at": NOW - 600, "error": None,
            "fine_tuned_model": None, "finished_at": None, "hyperparameters": {"n_epochs": 3, "batch_size": 4},
            "model": "tiny", "organization_id": "org-tunelab", "result_files": [], "seed": 7, "status": status,
            "trained_tokens": None, "training_file": "file-abc", "validation_file": None,
            "method": {"type": "supervised"}, **fields}


def metrics(step: int, train: float, valid: float | None = None) -> dict:
    data = {"step": step, "train_loss": train, **({"valid_loss": valid} if valid is not None else {})}
    return {"id": f"ftevent-{step}", "object": "fine_tuning.job.event", "created_at": NOW - 500 + step,
            "level": "info", "message": f"Step {step}", "type": "metrics", "data": data}


def message(n: int, text: str, level: str = "info") -> dict:
    return {"id": f"ftevent-m{n}", "object": "fine_tuning.job.event", "created_at": NOW - 590 + n, "level": level,
            "message": text, "type": "message", "data": None}


def checkpoint(job_id: str, step: int, train: float) -> dict:
    return {"id": f"ftckpt-{step}", "object": "fine_tuning.job.checkpoint", "created_at": NOW - 400 + step,
            "fine_tuned_model_checkpoint": f"ft:tiny::{job_id}:ckpt-step-{step}", "fine_tuning_job_id": job_id,
            "metrics": {"step": step, "train_loss": train}, "step_number": step}


def newest_first(events: list[dict]) -> list[dict]:
    return events[::-1]  # as GET .../events lists them


def views() -> list[JobView]:
    running = JobView(job("ftjob-run", "running"),
                      events=newest_first([message(1, "Fine-tuning job started"),
                                           *[metrics(s, 2.0 / s, 2.5 / s if s % 2 == 0 else None) for s in range(1, 7)],
                                           message(20, "Checkpoint created at step 4")]),
                      checkpoints=[checkpoint("ftjob-run", 2, 1.0), checkpoint("ftjob-run", 4, 0.5)])
    done = JobView(job("ftjob-done", "succeeded", fine_tuned_model="ft:tiny::ftjob-done", finished_at=NOW - 100,
                       trained_tokens=1234),
                   events=newest_first([metrics(1, 1.5), metrics(2, 1.2)]),
                   eval_report={"verdict": "tuned exact_match 0.810 vs base 0.120: better", "gate": {
                       "passed": True, "checks": [{"metric": "exact_match", "passed": True}]}})
    failed = JobView(job("ftjob-bad", "failed", finished_at=NOW - 550, model=EVIL, error={
        "code": "invalid_training_file", "message": "line 3 is not JSON", "param": "training_file"}))
    paused = JobView(job("ftjob-paused", "paused"))
    return [running, done, failed, paused]


def test_the_jobs_table_lists_every_job_with_status_model_and_duration():
    page = Outline(render_view(views(), now=NOW))
    text = page.text("jobs")
    for expected in ("ftjob-run running", "ftjob-done succeeded", "ft:tiny::ftjob-done", "ftjob-bad failed",
                     "ftjob-paused paused", "10m 00s", "8m 20s", "0m 50s", "1,234"):
        assert expected in text, expected


def test_a_job_section_shows_its_loss_curves_checkpoints_and_events():
    page = Outline(render_view(views(), now=NOW))
    running = page.sections["ftjob-run"]
    assert running["figure"] == "chart-loss-ftjob-run"
    assert running["shapes"]["svg"] == 1 and running["shapes"]["path"] == 2  # a train and a valid loss line
    assert running["shapes"]["circle"] == 6 + 3  # one marker per point
    text = page.text("ftjob-run")
    assert "train loss" in text and "valid loss" in text
    assert "ft:tiny::ftjob-run:ckpt-step-2" in text and "ft:tiny::ftjob-run:ckpt-step-4" in text
    assert text.index("Checkpoint created at step 4") < text.index("Fine-tuning job started")  # newest first
    assert "Evaluation: not yet" in text
    assert "No metrics yet" in page.text("ftjob-paused") and "No checkpoints yet" in page.text("ftjob-paused")


def test_buttons_follow_what_the_api_allows_for_each_status():
    page = Outline(render_view(views(), now=NOW))
    url = "/v1/fine_tuning/jobs/{}/{}"
    assert page.sections["ftjob-run"]["buttons"] == [("pause", url.format("ftjob-run", "pause")),
                                                     ("cancel", url.format("ftjob-run", "cancel"))]
    assert page.sections["ftjob-paused"]["buttons"] == [("resume", url.format("ftjob-paused", "resume")),
                                                        ("cancel", url.format("ftjob-paused", "cancel"))]
    assert page.sections["ftjob-done"]["buttons"] == page.sections["ftjob-bad"]["buttons"] == []


def test_the_eval_verdict_and_the_error_of_a_failed_job_are_shown():
    page = Outline(render_view(views(), now=NOW))
    assert "Evaluation: tuned exact_match 0.810 vs base 0.120: better" in page.text("ftjob-done")
    assert "Deploy gate passed: 1 of 1 checks pass." in page.text("ftjob-done")
    assert "failed: line 3 is not JSON (training_file)" in page.text("ftjob-bad")
    assert "Evaluation: no report for this job." in page.text("ftjob-bad")


def test_every_string_is_escaped_and_nothing_is_loaded_from_elsewhere():
    html = render_view(views(), now=NOW)
    assert EVIL not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "<script" not in html  # the view is data only: the shell's script handles the buttons
    assert Outline(html).links and all(link.startswith("#") for link in Outline(html).links)


def test_a_step_logged_again_after_a_resume_is_drawn_once_with_its_latest_loss():
    from tunelab.jobs.page import loss_blocks
    chart = loss_blocks("j", newest_first([metrics(1, 2.0), metrics(2, 1.5), metrics(2, 1.25), metrics(3, 1.0)]))[0]
    assert chart.svg.count("<circle") == 3 and "step 2, 1.25" in chart.svg and "step 2, 1.5<" not in chart.svg


def test_no_jobs_says_how_to_create_one():
    assert "No fine-tuning jobs yet" in Outline(render_view([], now=NOW)).text("jobs")


def test_the_shell_holds_no_job_data_and_loads_the_view_with_the_kept_key():
    shell = render_shell()
    assert "ftjob" not in shell and "<section" not in shell
    assert 'fetch("/jobs/view"' in shell and "sessionStorage" in shell and '"Bearer "' in shell
    assert 'id="key-form" hidden' in shell  # asked for only when the server answers 401
    assert "http://" not in shell and "https://" not in shell


def test_buttons_are_left_out_of_markdown():
    section = Section("s", "S", [Actions([Action("cancel", "/v1/fine_tuning/jobs/x/cancel")])])
    assert "cancel" not in render_markdown("t", [section])
