"""The chunked cross-entropy (trainer/chunked_loss.py) against Hugging Face's loss, on the CPU.

It computes the stock loss and its gradients (the hidden states', the head's, every trainable parameter's, in
fp32 and bf16, with ignored tokens and micro-batches that are no multiple of the chunk), and the loss's own peak,
measured with a live-tensor probe from the forward's start to the moment the final norm's output receives its
gradient (the loss's backward is then over), is what the memory model predicts: the saved activations plus
`activations.logits_peak`, for the stock loss and for the chunked one.
"""

import weakref
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402
from transformers.loss.loss_utils import ForCausalLMLoss  # noqa: E402

from kubetune.api.vocabulary import Method, Precision  # noqa: E402
from kubetune.memprobe import tiny_models  # noqa: E402
from kubetune.planner import activations, memory  # noqa: E402
from kubetune.planner.settings import TrainingSettings  # noqa: E402
from kubetune.trainer import chunked_loss  # noqa: E402

pytestmark = pytest.mark.measured

# Relative error of a whole tensor (its norm): fp32 differs only in summation order; in bf16 the head's weight
# gradient is summed over the chunks in bf16, where the stock loss rounds one GEMM's fp32 sum once.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
# The loss's peak, predicted against measured.
PEAK_TOLERANCE = 0.03
VOCAB = 8000  # large beside the hidden size (256), as in real models, so the loss matters


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def labels_with_ignored(batch: int, seq: int, vocab: int) -> torch.Tensor:
    labels = torch.randint(0, vocab, (batch, seq))
    labels[torch.rand(batch, seq) < 0.3] = -100  # prompts and padding
    labels[0, : seq // 2] = -100
    return labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [None, 30.0], ids=["plain", "gemma2-softcap"])
def test_loss_and_gradients_equal_the_stock_loss(dtype: torch.dtype, softcap: float | None) -> None:
    torch.manual_seed(0)
    batch, seq, hidden_size, chunk = 3, 37, 64, 16  # 111 tokens: six full chunks and one of 15
    head = torch.nn.Linear(hidden_size, VOCAB, bias=False, dtype=dtype)
    hidden = torch.randn(batch, seq, hidden_size, dtype=dtype, requires_grad=True)
    labels = labels_with_ignored(batch, seq, VOCAB)

    def stock() -> torch.Tensor:
        logits = head(hidden)
        if softcap is not None:  # Gemma-2's forward
            logits = torch.tanh(logits / softcap) * softcap
        return ForCausalLMLoss(logits, labels, VOCAB)

    results = []
    for loss_function in (stock, lambda: chunked_loss.causal_lm_loss(hidden, head, labels, chunk, softcap)):
        hidden.grad, head.weight.grad = None, None
        loss = loss_function()
        loss.backward()
        results.append((loss.detach(), hidden.grad.clone(), head.weight.grad.clone()))
    (want_loss, want_hidden, want_head), (got_loss, got_hidden, got_head) = results
    assert got_loss.dtype == want_loss.dtype == torch.float32
    assert got_loss.item() == pytest.approx(want_loss.item(), rel=1e-6)
    assert relative_error(got_hidden, want_hidden) < TOLERANCE[dtype]
    assert relative_error(got_head, want_head) < TOLERANCE[dtype]


def test_no_kept_token_gives_nan_as_the_stock_loss() -> None:
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(1, 5, 8)
    labels = torch.full((1, 5), -100)
    assert torch.isnan(chunked_loss.causal_lm_loss(hidden, head, labels, 2))
    assert torch.isnan(ForCausalLMLoss(head(hidden), labels, 50))


def trainer_models(method: Method, precision: Precision, seq_len: int, chunk: int,
                   family: str = "llama") -> tuple[torch.nn.Module, torch.nn.Module, object, TrainingSettings]:
    """The model the trainer prepares with the stock loss and with the chunked one (same seed, same weights)."""
    settings = TrainingSettings(seq_len=seq_len, micro_batch=2, method=method, precision=precision, zero_stage=0)
    config = tiny_models.tiny_config(family, 2, vocab_size=VOCAB)
    stock, arch = tiny_models.build(config, settings)
    chunked, _ = tiny_models.build(config, replace(settings, loss_chunk_tokens=chunk))
    return stock, chunked, arch, settings


@pytest.mark.parametrize("family", ["llama", "qwen2"])  # qwen2's tiny config ties the head to the embedding
@pytest.mark.parametrize("method", [Method.FULL, Method.LORA])
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.BF16])
def test_the_trainers_model_trains_the_same_with_the_chunked_loss(family: str, method: Method,
                                                                  precision: Precision) -> None:
    stock, chunked, _, _ = trainer_models(method, precision, seq_len=45, chunk=32, family=family)
    for model in (stock, chunked):  # LoRA's B starts at zero, which would leave A without a gradient to compare
        torch.manual_seed(1)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.data.normal_(std=0.02)
    ids = torch.randint(0, VOCAB, (2, 45))
    labels = labels_with_ignored(2, 45, VOCAB)
    losses = []
    for model in (stock, chunked):
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    dtype = next(stock.parameters()).dtype
    assert dtype == (torch.float32 if precision is Precision.FP32 else torch.bfloat16)
    trained = [(name, p) for name, p in stock.named_parameters() if p.requires_grad]
    assert trained
    chunked_parameters = dict(chunked.named_parameters())
    for name, parameter in trained:
        assert relative_error(chunked_parameters[name].grad, parameter.grad) < TOLERANCE[dtype], name


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages ops create while it is on, each counted until the storage itself is freed (a
    weakref finalizer on it), and their peak. Storages made before it started are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage._cdata
                # A view or an in-place result shares a storage already counted (or made before the probe).
                if key in self._sizes or storage.nbytes() == 0 or any(
                        isinstance(a, torch.Tensor) and a.untyped_storage()._cdata == key
                        for a in tree_leaves((args, kwargs))):
                    continue
                self._sizes[key] = storage.nbytes()
                self.live += storage.nbytes()
                weakref.finalize(storage, self._free, key)
        self.peak = max(self.peak, self.live)
        return out


def loss_peak(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Live bytes from the forward's start until the loss's backward is over (the final norm's output has its
    gradient), over those live before: what the loss and the saved activations need at once."""
    base = getattr(model, "get_base_model", lambda: model)()
    at_end: list[int] = []
    norm = base.model.norm

    def on_output(module: torch.nn.Module, args: object, out: torch.Tensor) -> None:
        out.register_hook(lambda grad: at_end.append(probe.peak))

    hook = norm.register_forward_hook(on_output)
    with LiveBytes() as probe:
        model(input_ids=ids, labels=ids).loss.backward()
    hook.remove()
    return at_end[0]


@pytest.mark.parametrize("method", [Method.LORA, Method.FULL])
@pytest.mark.parametrize("seq_len", [128, 256, 512])
def test_the_loss_peak_drops_as_the_memory_model_predicts(method: Method, seq_len: int) -> None:
    chunk = 128
    stock, chunked, arch, settings = trainer_models(method, Precision.BF16, seq_len, chunk)
    ids = torch.randint(0, VOCAB, (settings.micro_batch, seq_len))
    measured = {"stock": loss_peak(stock, ids), "chunked": loss_peak(chunked, ids)}
    chunked_settings = replace(settings, loss_chunk_tokens=chunk)
    saved = memory.activation_bytes(arch, settings)
    predicted = {"stock": saved + activations.logits_peak(arch, settings),
                 "chunked": saved + activations.logits_peak(arch, chunked_settings)}
    for loss in ("stock", "chunked"):
        assert predicted[loss] == pytest.approx(measured[loss], rel=PEAK_TOLERANCE), loss
    drop = measured["stock"] - measured["chunked"]
    assert predicted["stock"] - predicted["chunked"] == pytest.approx(drop, rel=PEAK_TOLERANCE)
