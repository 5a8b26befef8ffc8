from __future__ import annotations

from chatforge import models
from chatforge.generation import SamplingParams, TorchEngine
from chatforge.train import SFTConfig
from chatforge.train.best_of_n import best_of_n, expert_iteration


def test_best_of_n_keeps_the_highest_score_and_fine_tunes(tmp_path):
    model, tokenizer = models.build_tiny(seed=0)
    engine = TorchEngine(model, tokenizer)
    prompts = [[{"role": "user", "content": "Say something."}], [{"role": "user", "content": "Hello?"}]]
    winners = best_of_n(engine, lambda convs: [float(len(c[-1].content)) for c in convs], prompts, 4,
                        SamplingParams(max_new_tokens=6, temperature=1.0, seed=0))
    assert len(winners) == 2
    for w in winners:
        assert len(w.scores) == 4 and w.score == max(w.scores) == float(len(w.best.text))
    config = SFTConfig(output_dir=str(tmp_path / "ei"), max_steps=1, batch_sequences=2, max_seq_len=64, bf16=False,
                       progress=False, tensorboard=False)
    result = expert_iteration(config, model, tokenizer, winners)
    assert result.step == 1
