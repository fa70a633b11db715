"""The training library, installed with the `[train]` extra: adapter fine-tuning (`finetuning`, the `uniqa finetune`
command in `finetune`), contrastive pre-training (`pretraining`, `pretrain`), captioning (`captioning`, `caption`),
comment purification (`purification`, `purify`), evaluation protocols (`protocols`) and IQA metrics (`metrics`)."""
