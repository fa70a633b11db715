"""Checkout-only training material: configs, results, the default-model build (`build_default`, `model_card`) and
thin `python -m training.X` entry points to the `uniqa X` commands of `modeling_uniqa.training`."""
