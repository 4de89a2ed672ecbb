"""The TrainerCallback that reports each evaluation to Optuna and stops a pruned trial."""
import optuna
from transformers import TrainerControl, TrainerState, TrainingArguments

from tunelab.tune import ReportAndPrune


def test_reports_each_evaluation_and_stops_training_when_pruned(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    callback = ReportAndPrune(trial, "macro_f1", "maximize")
    args, state = TrainingArguments(output_dir=str(tmp_path), use_cpu=True), TrainerState()
    control = TrainerControl()
    callback.on_evaluate(args, state, control, metrics={"eval_macro_f1": 0.7, "eval_loss": 0.4})
    assert not control.should_training_stop and trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 0.7}
    callback.on_evaluate(args, state, control, metrics={"eval_macro_f1": 0.3})
    assert control.should_training_stop and callback.pruned and callback.evaluations == 2


def test_a_metric_training_does_not_compute_is_stood_in_for_by_the_negated_loss(tmp_path):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    callback = ReportAndPrune(trial, "exact_match", "maximize")
    callback.on_evaluate(TrainingArguments(output_dir=str(tmp_path), use_cpu=True), TrainerState(), TrainerControl(),
                         metrics={"eval_loss": 1.5})
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: -1.5}
