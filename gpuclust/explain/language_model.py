"""A local Hugging Face language model as a `describe.Generator`: causal (GPT-2, Llama, Qwen...) or
seq2seq (T5, BART), loaded offline from a folder or the Hugging Face cache, never downloaded.

Decoding is greedy (deterministic), all prompts in one batch (left padding for causal models, so every
answer starts where its prompt ends), with a budget of new tokens per prompt and a wall-clock limit
(`MaxTimeCriteria`). The weights sit on the backend's torch device: bf16 on CUDA, float32 on the CPU.
Every failure a user can fix (no such model, not a generative model, out of GPU memory) is one UsageError.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gpuclust.compat import torch_oom_error, transformers_dtype
from gpuclust.errors import UsageError
from gpuclust.explain.describe import ANSWER_START, Generation

# Architecture names that generate text; a config naming only others (BertModel, ...) is refused.
_GENERATIVE = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForSeq2SeqLM")


class LocalLM:
    """`generate(prompts)` with a local model. Parameters are stored as given; `load()` reads the model."""

    def __init__(self, model: str | Path, device: str = "cpu", max_new_tokens: int = 96,
                 time_limit: float = 300.0, max_prompt_tokens: int = 1024) -> None:
        self.model = str(model)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.time_limit = time_limit
        self.max_prompt_tokens = max_prompt_tokens
        self.name = Path(self.model).name if Path(self.model).expanduser().is_dir() else self.model

    def check(self) -> LocalLM:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or \
                not 8 <= self.max_new_tokens <= 4096:
            raise UsageError(f"--describe-tokens must be a whole number from 8 to 4096, got {self.max_new_tokens!r}")
        if isinstance(self.time_limit, bool) or not isinstance(self.time_limit, int | float) or \
                not 0 < self.time_limit <= 86_400:
            raise UsageError(f"--describe-seconds must be a number of seconds above 0 (at most a day), got "
                             f"{self.time_limit!r}")
        return self

    def prepare(self) -> LocalLM:
        """Config and tokenizer, offline: a missing or non-generative model fails here, before any work;
        sets `tokenizer_`, `seq2seq_`, `dtype_`, `source_`. The weights wait for `load` (or `generate`)."""
        self.check()
        try:
            import torch
            from transformers import AutoConfig, AutoTokenizer
        except ImportError as exc:
            raise UsageError(f"describing clusters needs torch and transformers ({exc}): pip install -e '.[cpu]' "
                             "(or a GPU extra)") from None

        where = Path(self.model).expanduser()
        if not where.is_dir() and str(self.model).startswith((".", "/", "~")):  # a path, as the text model reads it
            raise _no_model(self.model, "no such folder")  # not the hub's words on a repo id it is not
        self.source_ = str(where) if where.is_dir() else self.model
        try:
            config = AutoConfig.from_pretrained(self.source_, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise _no_model(self.model, _first_line(exc)) from None
        architectures = list(getattr(config, "architectures", None) or [])
        if architectures and not any(a.endswith(_GENERATIVE) for a in architectures):
            raise _not_generative(self.model, ", ".join(architectures))
        self.seq2seq_ = bool(getattr(config, "is_encoder_decoder", False))
        self.dtype_ = torch.bfloat16 if str(self.device).startswith("cuda") else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.source_, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise UsageError(f"the language model {self.model!r} has no usable tokenizer ({_first_line(exc)}): its "
                             "folder needs the tokenizer files") from None
        if tokenizer.pad_token is None:  # GPT-2 and many causal models have none: padding reuses the end token
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        tokenizer.padding_side = "right" if self.seq2seq_ else "left"
        tokenizer.truncation_side = "left"  # a long prompt loses facts, never the answer form at its end
        self.tokenizer_ = tokenizer
        return self

    def load(self) -> LocalLM:
        """The weights on `device` (bf16 on CUDA); sets `model_`."""
        if not hasattr(self, "tokenizer_"):
            self.prepare()
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        from gpuclust.features.text.model import quiet_loading

        auto = AutoModelForSeq2SeqLM if self.seq2seq_ else AutoModelForCausalLM
        try:
            with quiet_loading():
                model = auto.from_pretrained(self.source_, local_files_only=True, **transformers_dtype(self.dtype_))
        except ValueError as exc:  # a config no generative auto class knows
            raise _not_generative(self.model, _first_line(exc)) from None
        except OSError as exc:
            raise UsageError(f"the language model {self.model!r} is incomplete ({_first_line(exc)}): its folder needs "
                             "the weights") from None
        try:
            model.to(self.device)
        except torch_oom_error():
            raise _out_of_memory(self.model, self.device, "loading it") from None
        self.model_ = model.eval()
        return self

    def prompt_text(self, prompt: str) -> str:
        """An instruct model's chat template where it has one; the bare prompt otherwise. A causal model's
        answer is started for it ("Name:"), so that even a small one keeps to the answer's form."""
        tokenizer = self.tokenizer_
        if self.seq2seq_:
            return prompt
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True) + ANSWER_START
        return f"{prompt}\n\n{ANSWER_START}"

    def generate(self, prompts: list[str]) -> Generation:
        import torch
        from transformers import MaxTimeCriteria, StoppingCriteriaList

        if not hasattr(self, "model_"):
            self.load()
        model, tokenizer = self.model_, self.tokenizer_
        limit = min(self.max_prompt_tokens, _positions(model) - (0 if self.seq2seq_ else self.max_new_tokens))
        if limit < 16:
            raise UsageError(f"the language model {self.model!r} takes {_positions(model)} positions, too few for a "
                             f"prompt and {self.max_new_tokens} new tokens: lower --describe-tokens")
        batch = tokenizer([self.prompt_text(p) for p in prompts], return_tensors="pt", padding=True, truncation=True,
                          max_length=limit, add_special_tokens=not getattr(tokenizer, "chat_template", None))
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                out = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
                                     stopping_criteria=StoppingCriteriaList([MaxTimeCriteria(self.time_limit)]),
                                     pad_token_id=tokenizer.pad_token_id)
        except torch_oom_error():
            raise _out_of_memory(self.model, self.device, f"answering {len(prompts)} prompts") from None
        seconds = time.perf_counter() - started
        new = out if self.seq2seq_ else out[:, batch["input_ids"].shape[1]:]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        if not self.seq2seq_:  # the answer as the model gave it, from the start it was given
            texts = [ANSWER_START + t for t in texts]
        special = [t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None]
        counted = int((~torch.isin(new, torch.tensor(special, device=new.device))).sum()) if special else new.numel()
        return Generation(texts, new_tokens=counted, seconds=seconds, timed_out=seconds >= self.time_limit,
                          info={"kind": "seq2seq" if self.seq2seq_ else "causal", "device": str(self.device),
                                "dtype": str(self.dtype_).removeprefix("torch."), "decoding": "greedy",
                                "max_new_tokens": self.max_new_tokens, "time_limit_seconds": self.time_limit})


def _positions(model: Any) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 20  # relative positions (T5): no fixed limit


def _not_generative(model: str, what: str) -> UsageError:
    return UsageError(f"{model!r} is not a generative language model ({what}): --describe needs a causal or "
                      "seq2seq LM (e.g. a small instruct model such as Qwen2.5-0.5B-Instruct, or flan-t5)")


def _out_of_memory(model: str, device: str, doing: str) -> UsageError:
    return UsageError(f"the language model {model!r} ran out of memory on {device} {doing}: use a smaller model, "
                      "or describe on the CPU (--device cpu)")


def _no_model(model: str, why: str) -> UsageError:
    return UsageError(f"no local language model {model!r} ({why}): give a folder holding a saved Hugging Face model "
                      "(config.json, weights, tokenizer), or the name of one already in the Hugging Face cache; "
                      "gpuclust never downloads it")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
