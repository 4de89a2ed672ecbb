"""EWC's penalty and its place in the Trainer's loss hook; replay's share of the mixture."""
import torch

from tunelab.train import ewc
from tunelab.train.data import TrainingData
from tunelab.train.replay import mix_in, replay_count


def test_penalty_is_the_fisher_weighted_squared_distance_from_the_start():
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    anchor = ewc.Anchor([param], [torch.tensor([1.0, 2.0])], [torch.tensor([2.0, 0.5])], strength=10.0, examples=1,
                        raw_mean=1.0)
    assert anchor.penalty().item() == 0.0
    with torch.no_grad():
        param += torch.tensor([0.5, -2.0])
    assert anchor.penalty().item() == 0.5 * 10.0 * (2.0 * 0.25 + 0.5 * 4.0)


class FakeTrainer:
    def __init__(self, hook=None, accumulation=1):
        self.compute_loss_func = hook
        self.current_gradient_accumulation_steps = accumulation
        self.args = type("Args", (), {"average_tokens_across_devices": False})()


def test_attach_keeps_the_trainers_own_hook_and_splits_the_penalty_over_accumulation():
    param = torch.nn.Parameter(torch.tensor([3.0]))
    anchor = ewc.Anchor([param], [torch.tensor([1.0])], [torch.tensor([1.0])], strength=1.0, examples=1, raw_mean=1.0)
    trainer = FakeTrainer(hook=lambda outputs, labels, num_items_in_batch=None: torch.tensor(7.0), accumulation=4)
    ewc.attach(trainer, anchor, "classification")
    loss = trainer.compute_loss_func(None, None, num_items_in_batch=8)
    assert loss.item() == 7.0 + 0.5 * 4.0 / 4  # penalty 2.0 once per optimizer step of 4 micro-batches
    assert anchor.last_penalty == 2.0


def test_fisher_is_estimated_on_general_examples_and_normalised_to_mean_one(tiny_tokenizer_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_path)
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                                     num_hidden_layers=1, num_attention_heads=2, num_labels=2,
                                                     max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id))
    general = [{"text": "good day", "label": "pos"}, {"text": "bad day", "label": "neg"}]
    anchor = ewc.estimate(model, general, "classification", tokenizer, ["neg", "pos"], strength=5.0, max_length=16)
    values = torch.cat([f.flatten() for f in anchor.fisher])
    assert anchor.examples == 2 and abs(float(values.mean()) - 1.0) < 1e-4 and anchor.raw_mean > 0
    assert anchor.penalty().item() == 0.0 and model.training  # training mode restored


def test_replay_makes_up_its_share_of_the_training_set(write_jsonl):
    general = write_jsonl("general.jsonl", [{"text": f"old {i}", "label": "a"} for i in range(3)])
    data = TrainingData("classification", [{"text": f"new {i}", "label": "b"} for i in range(8)], [])
    mixed = mix_in(data, type("Replay", (), {"data": str(general), "share": 0.2})(), seed=0)
    replayed = [r for r in mixed.train if r.get("meta", {}).get("replay")]
    assert len(replayed) == replay_count(8, 0.2) == 2 and len(mixed.train) == 10
    assert str(general) in mixed.sources
    more = mix_in(data, type("Replay", (), {"data": str(general), "share": 0.5})(), seed=0)
    assert sum(1 for r in more.train if r.get("meta", {}).get("replay")) == 8  # 3 records cycled to make 8
