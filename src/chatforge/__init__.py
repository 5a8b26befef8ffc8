"""chatforge: the ChatGPT recipe (SFT -> comparisons -> reward model -> PPO -> red-teaming -> product) as one package."""

__version__ = "0.1.0"
