"""The scalar head reads the last real token: left/right padding, pad == eos, encoders."""

import pytest
import torch
from transformers import AutoConfig

from trainers.formatting import encode_pair
from trainers.models import apply_residual_dropout, load_causal_lm, load_scalar_model, load_tokenizer, pad_batch

MSGS = [{"role": "user", "content": "Pick a colour"}]


def _seqs(tok):
    return [encode_pair(tok, MSGS, text, 128)[0] for text in ("red", "a much longer blue answer here", "green tree")]


@pytest.mark.parametrize("fixture", ["tiny_dir", "tiny_pad_eos_dir"])
def test_score_is_the_same_for_left_right_and_no_padding(fixture, request):
    path = str(request.getfixturevalue(fixture))
    tok = load_tokenizer(path)
    torch.manual_seed(0)
    rm = load_scalar_model(path).eval()
    seqs = _seqs(tok)
    alone = torch.cat([rm(*pad_batch([s], tok.pad_token_id)) for s in seqs])
    right = rm(*pad_batch(seqs, tok.pad_token_id, "right"))
    left = rm(*pad_batch(seqs, tok.pad_token_id, "left"))
    assert torch.allclose(alone, right, atol=1e-5)
    assert torch.allclose(alone, left, atol=1e-5)
    assert len(set(alone.tolist())) == 3  # really different inputs


def test_pad_equals_eos_scores_the_final_eos_token(tiny_pad_eos_dir):
    tok = load_tokenizer(str(tiny_pad_eos_dir))
    assert tok.pad_token_id == tok.eos_token_id
    torch.manual_seed(0)
    rm = load_scalar_model(str(tiny_pad_eos_dir)).eval()
    seqs = _seqs(tok)
    assert all(s[-1] == tok.eos_token_id for s in seqs)
    ids, mask = pad_batch(seqs, tok.pad_token_id, "right")
    with torch.no_grad():
        h = rm.hidden(ids, mask)
        want = torch.stack([rm.hf.score(h[i, len(s) - 1]).squeeze() for i, s in enumerate(seqs)])
        got = rm(ids, mask)
        # an id-based rule (the token before the first pad id) would read the token before EOS
        wrong = torch.stack([rm.hf.score(h[i, s.index(tok.eos_token_id) - 1]).squeeze() for i, s in enumerate(seqs)])
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, wrong, atol=1e-4)


def test_bias_shifts_every_score(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    rm = load_scalar_model(str(tiny_dir)).eval()
    ids, mask = pad_batch(_seqs(tok), tok.pad_token_id)
    with torch.no_grad():
        a = rm(ids, mask)
        rm.set_bias(1.5)
        b = rm(ids, mask)
    assert torch.allclose(b - a, torch.full_like(a, 1.5))


def test_encoder_backbone_uses_its_classification_head(minilm_dir):
    tok = load_tokenizer(str(minilm_dir))
    rm = load_scalar_model(str(minilm_dir)).eval()
    assert not rm.is_decoder
    seqs = [encode_pair(tok, MSGS, t, 64)[0] for t in ("red", "blue and green")]
    with torch.no_grad():
        s = rm(*pad_batch(seqs, tok.pad_token_id))
        alone = torch.cat([rm(*pad_batch([q], tok.pad_token_id)) for q in seqs])
    assert s.shape == (2,) and torch.allclose(s, alone, atol=1e-5)


def test_residual_dropout_acts_in_training_only(tiny_dir):
    model = load_causal_lm(str(tiny_dir))
    assert apply_residual_dropout(model, 0.5) == 4  # attention + MLP of 2 layers
    ids = torch.tensor([[5, 6, 7, 8]])
    model.eval()
    with torch.no_grad():
        a, b = model(ids).logits, model(ids).logits
    assert torch.equal(a, b)
    model.train()
    with torch.no_grad():
        c = model(ids).logits
    assert not torch.allclose(a, c)


def test_dropout_option_turns_the_backbone_dropout_off_or_sets_it(minilm_dir):
    tok = load_tokenizer(str(minilm_dir))
    seqs = [encode_pair(tok, MSGS, t, 64)[0] for t in ("red", "blue and green")]
    batch = pad_batch(seqs, tok.pad_token_id)
    off = load_scalar_model(str(minilm_dir), dropout=0.0).train()  # training mode, yet deterministic
    with torch.no_grad():
        assert torch.equal(off(*batch), off(*batch))
    on = load_scalar_model(str(minilm_dir), dropout=0.3).train()
    assert on.hf.config.hidden_dropout_prob == 0.3
    with torch.no_grad():
        assert not torch.allclose(on(*batch), on(*batch))
    kept = load_scalar_model(str(minilm_dir))  # None: the backbone's own rate
    assert kept.hf.config.hidden_dropout_prob == AutoConfig.from_pretrained(minilm_dir).hidden_dropout_prob
