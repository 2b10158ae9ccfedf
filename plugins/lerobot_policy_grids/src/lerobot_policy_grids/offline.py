"""Build a SmolVLM config + tokenizer + processor in a local folder, so SmolVLA runs with no hub access.

SmolVLA reads ``AutoConfig`` and ``AutoProcessor`` from ``vlm_model_name`` even with ``load_vlm_weights=False``,
and its pre-processor loads a tokenizer from the same name. :func:`write_local_smolvlm` writes all three into a
folder (a small byte-level BPE tokenizer trained in code on robot-instruction words, with SmolVLM's special
tokens), and :func:`smolvla_offline_kwargs` returns the config overrides that point SmolVLA at it. ``size="real"``
gives the SmolVLM2-500M layout SmolVLA uses (SigLIP 12x768 at 512 px, 64 tokens x 960 per image, a 960-wide
text model), ``size="tiny"`` a few-thousand-parameter stand-in for tests. Weights are random either way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_local_smolvlm", "smolvla_offline_kwargs", "SMOLVLM_SIZES"]

_SPECIAL = {
    "pad_token": "<|pad|>",
    "unk_token": "<|unk|>",
    "bos_token": "<|im_start|>",
    "eos_token": "<end_of_utterance>",
}
_EXTRA = {
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}
_CORPUS = (
    "pick up the place it in put on open close turn push pull move stack the black bowl plate basket drawer cabinet "
    "alphabet soup cream cheese salad dressing ketchup tomato sauce butter milk orange juice chocolate pudding bbq "
    "stove microwave wine bottle rack top middle bottom left right front back next to between of and a an cube red "
    "green blue yellow grasp lift lower release gripper robot arm table 0 1 2 3 4 5 6 7 8 9 . , : ; ! ?"
)

# (vision hidden, layers, heads, intermediate, image size, patch) / (text hidden, layers, heads, kv heads,
# intermediate, vocab) / pixel-shuffle scale factor. "real" follows SmolVLM2-500M-Video-Instruct.
SMOLVLM_SIZES: dict[str, dict[str, Any]] = {
    "real": {
        "vision": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                   "image_size": 512, "patch_size": 16},
        "text": {"hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15, "num_key_value_heads": 5,
                 "intermediate_size": 2560, "vocab_size": 49280, "rope_theta": 100000.0,
                 "max_position_embeddings": 8192},
        "scale_factor": 4,
    },
    "tiny": {
        "vision": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                   "image_size": 64, "patch_size": 4},
        "text": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "intermediate_size": 128, "vocab_size": 1024, "rope_theta": 10000.0,
                 "max_position_embeddings": 512},
        "scale_factor": 2,
    },
}


def _tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=_SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys([*_SPECIAL.values(), *_EXTRA.values()]))
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab_size, 600),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=dict(_EXTRA), **_SPECIAL)


def write_local_smolvlm(
    out_dir: str | os.PathLike[str], size: str = "tiny", overwrite: bool = False, vision_layers: int | None = None
) -> Path:
    """Write a SmolVLM config, tokenizer and processor to ``out_dir`` (atomically) and return the folder.

    An existing folder with a config is reused unless ``overwrite``. ``vision_layers`` replaces the size's number
    of vision-encoder layers (e.g. a few for tests of ``grids_after_layer``).
    """
    from transformers import SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    if size not in SMOLVLM_SIZES:
        raise ValueError(f"size must be one of {sorted(SMOLVLM_SIZES)}, got {size!r}")
    out = Path(out_dir)
    if (out / "config.json").exists() and not overwrite:
        return out
    if vision_layers is not None and (isinstance(vision_layers, bool) or not isinstance(vision_layers, int)
                                      or vision_layers < 1):
        raise ValueError(f"vision_layers must be None or a positive int, got {vision_layers!r}")
    spec = SMOLVLM_SIZES[size]
    tokenizer = _tokenizer(spec["text"]["vocab_size"])
    vision = dict(spec["vision"])
    if vision_layers is not None:
        vision["num_hidden_layers"] = vision_layers
    tokens_side = vision["image_size"] // vision["patch_size"] // spec["scale_factor"]
    config = SmolVLMConfig(
        vision_config=dict(vision, model_type="smolvlm_vision"),
        text_config=dict(spec["text"], model_type="llama", rms_norm_eps=1e-5, tie_word_embeddings=False),
        scale_factor=spec["scale_factor"],
        image_token_id=tokenizer.convert_tokens_to_ids(_EXTRA["image_token"]),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    image_processor = SmolVLMImageProcessor(
        size={"longest_edge": vision["image_size"]},
        max_image_size={"longest_edge": vision["image_size"]},
        do_image_splitting=False,
    )
    processor = SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(),
        image_seq_len=tokens_side**2,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "grids_local_smolvlm.json").write_text(json.dumps({"size": size, "tokens_per_image": tokens_side**2}))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def smolvla_offline_kwargs(vlm_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """SmolVLA config overrides for a folder made by :func:`write_local_smolvlm` (image size matches its encoder)."""
    meta = json.loads((Path(vlm_dir) / "config.json").read_text())
    side = int(meta["vision_config"]["image_size"])
    return {"vlm_model_name": str(vlm_dir), "load_vlm_weights": False, "resize_imgs_with_padding": (side, side)}
