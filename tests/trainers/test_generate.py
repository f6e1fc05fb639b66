"""generate: K samples per prompt into the app's completions format; EOS handling."""

import gzip
import json

import torch

from trainers.generate import GenerateConfig, generate_completions, sample_responses
from trainers.models import load_causal_lm, load_tokenizer

from conftest import prompt_rows, write_jsonl


def test_writes_k_completions_per_prompt_gzipped(tiny_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(3) + [{"prompt": "no id here"}])
    out = tmp_path / "c.jsonl.gz"
    res = generate_completions(GenerateConfig(model=str(tiny_dir), prompts=str(prompts), out=str(out), k=2,
                                              max_new_tokens=5, model_name="tiny-sft", temperature=0.8))
    rows = [json.loads(x) for x in gzip.open(out, "rt", encoding="utf-8")]
    assert res["rows"] == len(rows) == 8
    assert [r.get("prompt_id") for r in rows] == [0, 0, 1, 1, 2, 2, None, None]
    assert rows[-1]["prompt"] == "no id here" and "prompt_id" not in rows[-1]
    assert all(r["model"] == "tiny-sft" and r["settings"]["temperature"] == 0.8 for r in rows)
    assert json.loads((tmp_path / "c.jsonl.gz.config.json").read_text())["k"] == 2


def test_samples_stop_at_eos_and_flag_cut_responses(tiny_pad_eos_dir):
    tok = load_tokenizer(str(tiny_pad_eos_dir))
    model = load_causal_lm(str(tiny_pad_eos_dir))

    def boost_eos(mod, inp, out):  # make EOS likely (p ~ 0.2 per token) so both outcomes occur
        out[..., tok.eos_token_id] += 4.5
        return out

    model.lm_head.register_forward_hook(boost_eos)
    torch.manual_seed(0)
    msgs = [[{"role": "user", "content": f"Hi {i}"}] for i in range(16)]
    samples = sample_responses(model, tok, msgs, 4, 1.0, torch.device("cpu"))
    for s in samples:
        assert len(s.response_ids) <= 4
        if s.has_eos:
            assert s.response_ids[-1] == tok.eos_token_id and tok.eos_token_id not in s.response_ids[:-1]
        else:
            assert len(s.response_ids) == 4 and tok.eos_token_id not in s.response_ids
    assert 0 < sum(s.has_eos for s in samples) < len(samples)
    greedy = sample_responses(model, tok, msgs[:2], 4, 0.0, torch.device("cpu"))
    again = sample_responses(model, tok, msgs[:2], 4, 0.0, torch.device("cpu"))
    assert [s.response_ids for s in greedy] == [s.response_ids for s in again]
