"""init-tiny: an offline tiny Llama + BPE tokenizer that from_pretrained loads."""

from transformers import AutoModelForCausalLM, AutoTokenizer

from trainers.tiny import TinyConfig, init_tiny


def test_tiny_model_and_tokenizer_from_given_text(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("zebra quokka axolotl\n" * 50 + "the cat sat on the mat\n" * 20)
    out = init_tiny(TinyConfig(out=str(tmp_path / "m"), text=str(text), vocab_size=320, hidden_size=32,
                               num_heads=2, intermediate_size=64))
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert len(tok) <= 320 and model.config.vocab_size == len(tok)
    assert len(tok("zebra quokka axolotl")["input_ids"]) <= 4  # merges learned from the given text
    assert tok.eos_token_id != tok.pad_token_id
    assert sum(p.numel() for p in model.parameters()) < 100_000
    assert (out / "model.safetensors").is_file()
