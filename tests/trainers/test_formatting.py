"""Plain prompt format and chat templates: prompt ids are a prefix the response follows."""

from trainers.formatting import encode_pair, encode_prompt, encode_response, plain_prompt
from trainers.models import load_tokenizer


def test_plain_format_matches_the_documented_layout():
    msgs = [{"role": "system", "content": "Be kind"}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
    assert plain_prompt(msgs) == "System: Be kind\n\nUser: Hi\n\nAssistant: Hello\n\nUser: Bye\n\nAssistant:"


def test_plain_encoding_ends_with_eos_and_decodes_back(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    msgs = [{"role": "user", "content": "Name a fruit"}]
    ids, plen = encode_pair(tok, msgs, "apple", 512)
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[:plen], skip_special_tokens=True) == "User: Name a fruit\n\nAssistant:"
    assert tok.decode(ids[plen:], skip_special_tokens=True) == " apple"


def test_truncation_keeps_the_end_of_the_prompt(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    msgs = [{"role": "user", "content": "word " * 200}]
    ids, plen = encode_pair(tok, msgs, "short answer", 32)
    assert len(ids) == 32
    assert ids[plen:] == encode_response(tok, msgs, "short answer")
    assert ids[:plen] == encode_prompt(tok, msgs)[-plen:]


def test_chat_template_is_used_when_present(tiny_dir, tmp_path):
    tok = load_tokenizer(str(tiny_dir))
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
    msgs = [{"role": "user", "content": "Hi"}]
    ids, plen = encode_pair(tok, msgs, "Yo", 512)
    assert tok.decode(ids[:plen]) == "<s>user\nHi</s><s>assistant\n"
    assert tok.decode(ids[plen:]) == "Yo</s>"


def test_encoder_pairs_keep_cls_through_truncation_and_end_with_sep(minilm_dir):
    # [CLS] prompt [SEP] response [SEP]: the encoder's own pair format, whatever the truncation
    tok = load_tokenizer(str(minilm_dir))
    msgs = [{"role": "user", "content": "word " * 300}]
    full, _ = encode_pair(tok, [{"role": "user", "content": "hi"}], "fine thanks", 64)
    assert full[0] == tok.cls_token_id and full[-1] == tok.sep_token_id
    cut, plen = encode_pair(tok, msgs, "short answer", 32)
    assert len(cut) == 32 and cut[0] == tok.cls_token_id and cut[-1] == tok.sep_token_id
    prompt = encode_prompt(tok, msgs)
    assert cut[1:plen] == prompt[-(plen - 1):]  # the rest of the prompt is still its end


def test_truncation_keeps_a_leading_bos(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    msgs = [{"role": "user", "content": "word " * 200}]
    prompt = encode_prompt(tok, msgs)
    ids, plen = encode_pair(tok, msgs, "short answer", 32)
    if tok.bos_token_id is not None and prompt[0] == tok.bos_token_id:
        assert ids[0] == tok.bos_token_id and ids[1:plen] == prompt[-(plen - 1):]
    else:
        assert ids[:plen] == prompt[-plen:]
