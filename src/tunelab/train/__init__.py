"""Fine-tuning: SFT (TRL), classification (transformers Trainer), DPO (TRL), progressive
stages and multi-task mixing; `run.run()` ties them together."""
