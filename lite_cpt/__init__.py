"""lite-cpt: continual post-training of vision-language models on one GPU."""

__version__ = "0.1.0"
