"""QLoRA's frozen base model: bitsandbytes' 4-bit NF4 weights with double quantisation, and the 16-bit copy of one
weight that each 4-bit matmul dequantises while it runs.

What transformers (5.x) quantises (integrations/bitsandbytes.py, replace_with_bnb_linear): every nn.Linear but the
LM head (quantizers/base.py, get_keys_to_not_convert, keeps the output embedding); embeddings, norms and biases stay
in the compute dtype, and so do MoE experts and routers, which transformers keeps as plain parameters rather than
linear modules. How bitsandbytes
(0.50) stores one quantised weight of n elements (functional.py, quantize_4bit with compress_statistics=True, the
QLoRA paper's double quantisation, which the trainer asks for):
- the packed weight: two 4-bit codes per byte, n / 2 bytes (Params4bit's uint8 storage);
- one absmax per block of 64 weights, itself quantised to 8 bits (quantize_blockwise): n / 64 bytes;
- the second level: one fp32 absmax per 256 first-level blocks, its 256-entry fp32 code book and an fp32 offset;
- the NF4 code book: 16 fp32 values.
That is 4.127 bits per weight, measured to the byte on the CPU (tests/measured/test_qlora_memory.py).
"""

from kubetune.planner.architecture import Architecture

BLOCK = 64  # weights per first-level absmax (bnb_4bit_blocksize default; the QLoRA paper's)
NESTED_BLOCK = 256  # first-level absmaxes per second-level fp32 absmax (bitsandbytes fixes it)
FP32 = 4
# Per tensor: the nested code book (256 fp32) and offset (one fp32), and the NF4 code book (16 fp32).
PER_TENSOR = (256 + 1 + 16) * FP32


def quantized_numels(arch: Architecture) -> list[int]:
    """The weight tensors of one layer that become 4-bit: its linear modules (an MoE layer's attention only)."""
    shapes = arch.linear_shapes
    names = ("q_proj", "k_proj", "v_proj", "o_proj") if arch.is_moe else tuple(shapes)
    return [shapes[name][0] * shapes[name][1] for name in names]


def tensor_bytes(numel: int) -> int:
    """One quantised weight: packed codes, 8-bit absmaxes, their fp32 second level and the code books."""
    blocks = -(-numel // BLOCK)
    return -(-numel // 2) + blocks + FP32 * -(-blocks // NESTED_BLOCK) + PER_TENSOR


def quantized_params(arch: Architecture) -> int:
    """Parameters stored in 4 bits; the rest of arch.total_params stays in the compute dtype."""
    return sum(quantized_numels(arch)) * arch.num_layers


def quantized_bytes(arch: Architecture) -> int:
    return sum(tensor_bytes(n) for n in quantized_numels(arch)) * arch.num_layers


def dequantization_bytes(arch: Architecture, compute_bytes: int) -> int:
    """What a 4-bit matmul allocates while it runs: bitsandbytes dequantises the whole weight into the compute
    dtype, with its absmaxes expanded to fp32 first (backends/default/ops.py, _gemm_4bit_default_impl; the CUDA
    backend's _dequant_linear_fallback past 1,536 rows, and MatMul4Bit.backward always). It is freed after the
    matmul, one weight at a time: the largest one bounds it."""
    largest = max(quantized_numels(arch))
    return largest * compute_bytes + -(-largest // BLOCK) * FP32
