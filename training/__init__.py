"""Training entry points: adapter fine-tuning (`finetune.py`) and evaluation protocols (`protocols.py`)."""
