"""minirl: adversarial inverse RL for LLM reasoning (arXiv 2510.01857), small and readable."""

__version__ = "0.2.0"
