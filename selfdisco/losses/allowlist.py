"""What candidate loss code may reach: module attributes, value attributes and builtins.

Everything not named here is refused by the static check. The lists hold pure tensor math only:
nothing that reads or writes files, starts processes, draws random numbers or changes torch's
global state.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# torch.<name>: functions, dtypes and constants.
TORCH = _words("""
    abs absolute acos acosh add addcdiv addcmul all allclose amax amin any arange argmax argmin
    argsort as_tensor asin asinh atan atan2 atanh atleast_1d bincount broadcast_tensors
    broadcast_to cat ceil chunk clamp clamp_max clamp_min clip clone concat concatenate copysign
    cos cosh count_nonzero cummax cummin cumprod cumsum deg2rad diff digamma div divide dot eq
    equal erf erfc erfinv exp exp2 expm1 eye flatten flip float_power floor floor_divide fmax
    fmin fmod frac full full_like gather ge greater greater_equal gt heaviside hstack hypot
    index_select is_floating_point is_tensor isclose isfinite isinf isnan isneginf isposinf le
    lerp less less_equal lgamma linspace log log10 log1p log2 log_softmax logaddexp logaddexp2
    logcumsumexp logical_and logical_not logical_or logical_xor logit logspace logsumexp lt
    masked_fill matmul max maximum mean median min minimum mm mul multiply mv nan_to_num nanmean
    nansum narrow ne neg negative norm not_equal numel ones ones_like outer polygamma pow prod
    quantile rad2deg reciprocal relu remainder reshape roll round rsqrt scatter scatter_add selu
    sigmoid sign signbit sin sinc sinh softmax sort split sqrt square squeeze stack std std_mean
    sub subtract sum t take take_along_dim tan tanh tensor topk transpose tril triu true_divide
    trunc unbind unsqueeze var var_mean vstack where xlogy zeros zeros_like
    finfo no_grad enable_grad result_type promote_types
    bfloat16 bool double float float16 float32 float64 half int int32 int64 long
    e inf nan pi
""")

# torch.nn.functional.<name> (usually imported as F).
FUNCTIONAL = _words("""
    binary_cross_entropy binary_cross_entropy_with_logits celu cosine_similarity cross_entropy
    elu gelu hardshrink hardsigmoid hardswish hardtanh hinge_embedding_loss huber_loss kl_div
    l1_loss leaky_relu log_softmax logsigmoid margin_ranking_loss mish mse_loss
    multi_margin_loss nll_loss normalize one_hot pairwise_distance relu relu6 selu sigmoid silu
    smooth_l1_loss soft_margin_loss softmax softmin softplus softshrink softsign tanh tanhshrink
    threshold
""")

# torch.special.<name>.
SPECIAL = _words("""
    digamma entr erf erfc erfinv exp2 expit expm1 gammaln i0 log1p log_ndtr log_softmax
    logit logsumexp ndtr ndtri psi round sinc softmax xlog1py xlogy
""")

# math.<name>: every public name of the math module is pure arithmetic.
MATH = _words("""
    acos acosh asin asinh atan atan2 atanh cbrt ceil comb copysign cos cosh degrees dist e erf
    erfc exp exp2 expm1 fabs factorial floor fmod frexp fsum gamma gcd hypot inf isclose
    isfinite isinf isnan isqrt lcm ldexp lgamma log log10 log1p log2 modf nan nextafter perm pi
    pow prod radians remainder sin sinh sqrt tan tanh tau trunc ulp
""")

# Allowed module paths and what may follow each of them.
MODULES: dict[str, frozenset[str]] = {
    "torch": TORCH | {"nn", "special"},
    "torch.nn": frozenset({"functional"}),
    "torch.nn.functional": FUNCTIONAL,
    "torch.special": SPECIAL,
    "math": MATH,
}

# Names every candidate sees without importing anything.
DEFAULT_MODULE_NAMES = {"torch": "torch", "F": "torch.nn.functional", "math": "math"}

# Attributes of values (tensors, dtypes, finfo, lists, dicts, the (values, indices) pairs of
# max, sort and topk): pure methods and properties, and a few in-place ones for tensors the
# code builds itself.
VALUE_ATTRS = _words("""
    T abs acos acosh add addcmul all amax amin any argmax argmin argsort asin asinh atan atan2
    atanh bool ceil chunk clamp clamp_max clamp_min clip clone contiguous cos cosh cumprod
    cumsum detach device diff dim div dot double dtype eq erf exp expand expand_as expm1 flatten
    flip float floor fmod frac gather ge gt half index_select indices int is_floating_point
    isfinite isinf isnan item le lerp log log10 log1p log2 log_softmax logaddexp logical_and
    logical_not logical_or logit logsumexp long lt masked_fill matmul max maximum mean median
    min minimum mul nan_to_num ndim ne neg new_full new_ones new_tensor new_zeros norm numel pow
    prod reciprocal relu remainder repeat requires_grad reshape round rsqrt scatter scatter_add
    shape sigmoid sign sin sinh size softmax sort split sqrt square squeeze std sub sum t
    take_along_dim tan tanh to tolist topk transpose trunc type_as unsqueeze var view view_as
    where
    add_ sub_ mul_ div_ clamp_ clamp_min_ clamp_max_ masked_fill_ fill_ zero_ scatter_
    scatter_add_
    eps tiny
    append items keys values
""")

# Builtins a loss function may call.
SAFE_BUILTINS = _words("""
    abs all any bool dict divmod enumerate float int isinstance len list map max min pow range
    reversed round sorted sum tuple zip
    ArithmeticError AssertionError Exception FloatingPointError IndexError KeyError
    OverflowError RuntimeError TypeError ValueError ZeroDivisionError
""")

# Builtins worth a specific refusal message (everything else unknown is "not defined").
DANGEROUS_BUILTINS = _words("""
    __import__ breakpoint classmethod compile delattr dir eval exec exit getattr globals hasattr
    help id input locals memoryview object open print property quit setattr staticmethod super
    type vars
""")

# Modules an LLM habitually imports though nothing from them runs (annotations are dropped).
ANNOTATION_MODULES = frozenset({"typing", "__future__"})

# Size limits.
MAX_CODE_CHARS = 8000
MAX_AST_NODES = 2500
MAX_RANGE = 100_000
