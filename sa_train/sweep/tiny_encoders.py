"""Tiny randomly initialised text encoders of each pretrained kind, saved with their tokenizers.

The tiny text-encoder sweep compares the encoder *kinds* (CLAP's RoBERTa text tower against a T5
encoder against the embedded one) on a laptop, where the real checkpoints are out of reach
(hundreds of MB, and no network). These folders load through exactly the code path of the real
ones (``from_pretrained`` of a local folder), so the sweep exercises everything but the weights.

    python -m sa_train.sweep.tiny_encoders models/tiny_text_encoders
    -> models/tiny_text_encoders/clap  (ClapTextModelWithProjection + RoBERTa-style tokenizer)
       models/tiny_text_encoders/t5    (T5EncoderModel + tokenizer with T5's pad and eos)

Tokenizers are byte-level with no merges (every byte is a token), so any prompt tokenizes and
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

HIDDEN = 32
LAYERS = 3
MAX_POSITIONS = 130  # RoBERTa uses max_length + 2 positions; the tiny preset's max_length is 64


def _byte_alphabet() -> list[str]:
    import tokenizers

    return sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())


def roberta_style_tokenizer():
    """RoBERTa's special tokens over a byte-level alphabet (what CLAP's text tower expects)."""
    import transformers

    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", *_byte_alphabet()])}
    return transformers.RobertaTokenizerFast(vocab=vocab, merges=[])


def t5_style_tokenizer():
    """T5's pad (0), eos (1) and unk (2), eos appended to every prompt, byte-level tokens."""
    import tokenizers
    import transformers

    vocab = {tok: i for i, tok in enumerate(["<pad>", "</s>", "<unk>", *_byte_alphabet()])}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")


def write_tiny_text_encoders(out_dir: str | Path, seed: int = 0) -> dict[str, str]:
    """Save a tiny CLAP text model and a tiny T5 encoder; returns {"clap": folder, "t5": folder}.

    Use "clap" for both text_encoder kinds clap and clap_laion (the kinds differ only in their default checkpoint).
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    out = Path(out_dir)
    clap_tokenizer, t5_tokenizer = roberta_style_tokenizer(), t5_style_tokenizer()
    clap = transformers.ClapTextModelWithProjection(transformers.ClapTextConfig(
        vocab_size=len(clap_tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
        intermediate_size=2 * HIDDEN, max_position_embeddings=MAX_POSITIONS, projection_dim=16,
        pad_token_id=clap_tokenizer.pad_token_id,
    ))
    t5 = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=len(t5_tokenizer), d_model=HIDDEN, d_kv=16, num_heads=2, d_ff=2 * HIDDEN, num_layers=LAYERS,
        dropout_rate=0.0, feed_forward_proj="relu", is_encoder_decoder=False, use_cache=False,
        pad_token_id=0, eos_token_id=1,
    ))
    paths = {}
    for name, model, tokenizer in (("clap", clap, clap_tokenizer), ("t5", t5, t5_tokenizer)):
        folder = out / name
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        paths[name] = str(folder)
    logger.info("wrote tiny text encoders to %s", out)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to write clap/ and t5/ into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for kind, path in write_tiny_text_encoders(args.out, args.seed).items():
        logger.info("%s: %s", kind, path)


if __name__ == "__main__":
    main()
