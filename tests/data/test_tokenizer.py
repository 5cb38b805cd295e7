from transformers import PreTrainedTokenizerFast

from mixagent.data.tokenizer import TokenizerConfig, get_tokenizer, token_byte_lengths, tokenizer_dir


def test_tokenizer_roundtrip_and_byte_lengths():
    tok = get_tokenizer(TokenizerConfig())
    assert isinstance(tok, PreTrainedTokenizerFast) and len(tok) == 4096
    text = "Problem: Let x_1 = 3 — café.\n    def f(x):\n        return x ** 2"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert token_byte_lengths(tok)[ids].sum() == len(text.encode("utf-8"))
    assert token_byte_lengths(tok)[tok.eos_token_id] == 0


def test_tokenizer_is_cached_by_corpus_hash():
    cfg = TokenizerConfig()
    get_tokenizer(cfg)
    path = tokenizer_dir(cfg) / "tokenizer.json"
    stamp = path.stat().st_mtime_ns
    get_tokenizer(cfg)
    assert path.stat().st_mtime_ns == stamp
    assert tokenizer_dir(TokenizerConfig(vocab_size=2048)) != tokenizer_dir(cfg)
