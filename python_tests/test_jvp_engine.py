"""lora_jvp vs torch.func.jvp (math attention) and finite differences on tiny UNets; the
last-layer mode; scoped patching; bad inputs."""
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from l2vsd_ext.jvp import lora_jvp
from l2vsd_ext.jvp.tiny_unets import (TINY_CONFIGS, lora_parameters, make_lora_unet,
                                      random_direction, random_inputs)

CONFIGS = sorted(TINY_CONFIGS)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def func_jvp(unet, direction, inputs):
    """torch.func.jvp of the UNet output w.r.t. the parameters in `direction` (its LoRA parameters,
    and any others), with the math processor."""
    sample, timestep, ehs, labels = inputs
    previous = unet.attn_processors
    unet.set_attn_processor(AttnProcessor())
    # torch's group_norm forward-AD rule fails on a non-contiguous tangent (AttnProcessor's
    # transposed output feeds the next resnet's norm): hand it contiguous tensors.
    # transposed output feeds the next resnet's norm): use the same math written out for those.
    norms = [m for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    # AttnProcessor's upcast_softmax computes the softmax in float32, even for float64 inputs
    attns = [m for m in unet.modules() if hasattr(m, "upcast_softmax")]
    upcast = [(m.upcast_softmax, m.upcast_attention) for m in attns]
    for m in attns:
        m.upcast_softmax = m.upcast_attention = False
    for m in norms:
        m.forward = lambda x, m=m: _group_norm_math(x, m)
    try:
        params = dict(unet.named_parameters())
        names = list(direction)

        def f(*values):
            return torch.func.functional_call(unet, dict(zip(names, values)), (sample, timestep, ehs),
                                              {"class_labels": labels, "return_dict": False})[0]

        with torch.no_grad():
            return torch.func.jvp(f, tuple(params[n] for n in names),
                                  tuple(direction[n] for n in names))
    finally:
        for m in norms:
            del m.forward
        for m, (soft, att) in zip(attns, upcast):
            m.upcast_softmax, m.upcast_attention = soft, att
        unet.set_attn_processor(previous)


def _group_norm_math(x, m):
    g = x.reshape(x.shape[0], m.num_groups, -1)
    mean = g.mean(-1, keepdim=True)
    var = ((g - mean) ** 2).mean(-1, keepdim=True)
    y = ((g - mean) / torch.sqrt(var + m.eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return y * m.weight.reshape(shape) + m.bias.reshape(shape)


@pytest.fixture(scope="module", params=CONFIGS)
def case64(request):
    unet = make_lora_unet(TINY_CONFIGS[request.param], dtype=torch.float64)
    return unet, random_direction(unet), random_inputs(unet, batch=2)


def test_matches_func_jvp_float64(case64):
    unet, direction, inputs = case64
    eps, eps_dot = lora_jvp(unet, direction, *inputs[:3], class_labels=inputs[3])
    want, want_dot = func_jvp(unet, direction, inputs)
    assert rel_err(eps, want) <= 1e-10
    assert eps_dot.norm() > 0
    assert rel_err(eps_dot, want_dot) <= 1e-6


def test_matches_central_finite_differences(case64):
    unet, direction, inputs = case64
    _, eps_dot = lora_jvp(unet, direction, *inputs[:3], class_labels=inputs[3])
    h = 1e-5
    params = lora_parameters(unet)
    outs = []
    with torch.no_grad():
        for sign in (1, -1):
            for n, p in params.items():
                p.add_(sign * h * direction[n])
            outs.append(unet(*inputs[:3], class_labels=inputs[3]).sample)
            for n, p in params.items():
                p.sub_(sign * h * direction[n])
    fd = (outs[0] - outs[1]) / (2 * h)
    assert rel_err(eps_dot, fd) <= 1e-6


@pytest.mark.parametrize("name", CONFIGS)
def test_float32_matches_float64_reference(name):
    unet = make_lora_unet(TINY_CONFIGS[name], dtype=torch.float64)
    direction, inputs = random_direction(unet), random_inputs(unet)
    want, want_dot = func_jvp(unet, direction, inputs)
    unet32 = unet.float()
    eps, eps_dot = lora_jvp(unet32, {k: v.float() for k, v in direction.items()},
                            *(None if t is None else (t.float() if t.is_floating_point() else t)
                              for t in inputs[:3]),
                            class_labels=None if inputs[3] is None else inputs[3].float())
    assert eps.dtype == torch.float32
    assert rel_err(eps, want) <= 1e-4
    assert rel_err(eps_dot, want_dot) <= 1e-4


def last_lora_layer(unet, inputs):
    from peft.tuners.lora import LoraLayer
    order = []
    hooks = [m.register_forward_hook(lambda *_, n=n: order.append(n))
             for n, m in unet.named_modules() if isinstance(m, LoraLayer)]
    with torch.no_grad():
        unet(*inputs[:3], class_labels=inputs[3])
    for h in hooks:
        h.remove()
    return order[-1]


@pytest.mark.parametrize("name", CONFIGS)
def test_last_layer_only_equals_zeroed_direction(name):
    unet = make_lora_unet(TINY_CONFIGS[name], dtype=torch.float64)
    direction, inputs = random_direction(unet), random_inputs(unet)
    last = last_lora_layer(unet, inputs)
    zeroed = {k: (v if k.startswith(last + ".") else torch.zeros_like(v)) for k, v in direction.items()}
    eps, eps_dot = lora_jvp(unet, direction, *inputs[:3], class_labels=inputs[3],
                            last_layer_only=True)
    want, want_dot = lora_jvp(unet, zeroed, *inputs[:3], class_labels=inputs[3])
    assert rel_err(eps, want) <= 1e-10
    assert eps_dot.norm() > 0
    assert rel_err(eps_dot, want_dot) <= 1e-10
    # only the last layer's keys are needed in this mode
    only_last = {k: v for k, v in direction.items() if k.startswith(last + ".")}
    _, eps_dot2 = lora_jvp(unet, only_last, *inputs[:3], class_labels=inputs[3], last_layer_only=True)
    assert torch.equal(eps_dot, eps_dot2)


def test_module_unchanged_after_call():
    unet = make_lora_unet(TINY_CONFIGS["cross_attention"], dtype=torch.float64)
    unet.set_attn_processor(AttnProcessor2_0())
    direction, inputs = random_direction(unet), random_inputs(unet)
    with torch.no_grad():
        before = unet(*inputs[:3], class_labels=inputs[3]).sample
    processors = dict(unet.attn_processors)
    instance_forwards = {n for n, m in unet.named_modules() if "forward" in m.__dict__}
    eps, _ = lora_jvp(unet, direction, *inputs[:3], class_labels=inputs[3])
    lora_jvp(unet, direction, *inputs[:3], class_labels=inputs[3], last_layer_only=True)
    assert {n: id(p) for n, p in unet.attn_processors.items()} == {n: id(p) for n, p in processors.items()}
    assert {n for n, m in unet.named_modules() if "forward" in m.__dict__} == instance_forwards
    with torch.no_grad():
        after = unet(*inputs[:3], class_labels=inputs[3]).sample
    assert torch.equal(before, after)
    assert rel_err(eps, before) <= 1e-12
    # restored also when the pass raises
    with pytest.raises(Exception):
        lora_jvp(unet, direction, inputs[0][:, :3], *inputs[1:3], class_labels=inputs[3])
    assert {n: id(p) for n, p in unet.attn_processors.items()} == {n: id(p) for n, p in processors.items()}
    assert {n for n, m in unet.named_modules() if "forward" in m.__dict__} == instance_forwards


def test_generic_path_with_two_adapters():
    """Layers outside the fused path (two active adapters, one with dropout, inactive in eval
    mode) take the forward-AD fallback and still match."""
    from peft import LoraConfig
    unet = make_lora_unet(TINY_CONFIGS["self_attention_only"], dtype=torch.float64)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=3, target_modules=["to_q", "to_v"],
                                lora_dropout=0.1, init_lora_weights="gaussian"),
                     adapter_name="second")
    unet.set_adapters(list(unet.peft_config))
    unet.eval()  # the new adapter's modules start in training mode
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B.second" in n:
                p.normal_(0, 0.2)
    direction, inputs = random_direction(unet), random_inputs(unet)
    eps, eps_dot = lora_jvp(unet, direction, *inputs[:3], class_labels=inputs[3])
    want, want_dot = func_jvp(unet, direction, inputs)
    assert rel_err(eps_dot, want_dot) <= 1e-6


def test_lora_on_conv_layers_takes_the_generic_path():
    """LoRA on the resnets' convolutions: peft's conv LoRA runs its own forward with dual adapter
    weights, through the patched nn.Conv2d modules, which must fall back to forward AD there."""
    from peft import LoraConfig
    unet = make_lora_unet(TINY_CONFIGS["cross_attention"], dtype=torch.float64)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["conv1", "conv2"],
                                init_lora_weights="gaussian"), adapter_name="convs")
    unet.set_adapters(list(unet.peft_config))
    unet.eval()
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B.convs" in n:
                p.normal_(0, 0.2)
    assert any("conv1.lora_A.convs" in n for n, _ in unet.named_parameters())
    direction, inputs = random_direction(unet, seed=int(torch.randint(0, 10**6, (1,)))), random_inputs(unet)
    eps, eps_dot = lora_jvp(unet, direction, *inputs[:3], class_labels=inputs[3])
    want, want_dot = func_jvp(unet, direction, inputs)
    assert rel_err(eps, want) <= 1e-10
    assert rel_err(eps_dot, want_dot) <= 1e-6


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
@pytest.mark.parametrize("size", [6, 34])
def test_affine_rules_match_forward_ad(padding_mode, size):
    """The linear/conv rules on their own: tangent = the layer without its bias applied to the
    input tangent, for every padding mode. A large image runs the module's own forward (the primal
    bit for bit); a small one (at most STACK_MAX_PIXELS) convolves [x; x_dot] as one batch."""
    import torch.autograd.forward_ad as fwAD
    from l2vsd_ext.jvp.affine_rules import STACK_MAX_PIXELS
    from l2vsd_ext.jvp.scope import engine_scope
    gen = torch.Generator().manual_seed(int(torch.randint(0, 10**6, (1,))))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1, padding_mode=padding_mode),
                              torch.nn.Flatten(1), torch.nn.Linear(5 * size * size, 4)).double()
    x, x_dot = (torch.randn(2, 3, size, size, generator=gen, dtype=torch.float64) for _ in range(2))
    stacked = 2 * size * size <= STACK_MAX_PIXELS
    calls = []  # batch sizes reaching the convolution
    conv_forward = net[0]._conv_forward
    net[0]._conv_forward = lambda inp, *a: calls.append(inp.shape[0]) or conv_forward(inp, *a)
    with torch.no_grad():
        want, want_dot = torch.func.jvp(net, (x,), (x_dot,))
        calls.clear()
        with engine_scope(net, {}), fwAD.dual_level():
            out = fwAD.unpack_dual(net(fwAD.make_dual(x, x_dot)))
        if stacked:
            assert calls == [4]  # one convolution of [x; x_dot]
            assert rel_err(out.primal, net(x)) <= 1e-12
        else:
            assert calls == [2, 2]  # the module's own forward on x, then x_dot
            assert torch.equal(out.primal, net(x))
    assert "forward" not in net[0].__dict__ and "forward" not in net[2].__dict__  # restored
    assert rel_err(out.tangent, want_dot) <= 1e-12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 3e-2),
                                       (torch.bfloat16, 8e-2)])
def test_cuda_dtypes_match_float64_reference(dtype, tol):
    from l2vsd_ext._ext import cuda_kernels_available
    if not cuda_kernels_available():
        pytest.skip("extension built without CUDA kernels")
    unet = make_lora_unet(TINY_CONFIGS["camera_embedding"], dtype=torch.float64)
    direction, inputs = random_direction(unet), random_inputs(unet, batch=2)
    want, want_dot = func_jvp(unet, direction, inputs)
    unet_gpu = unet.to("cuda", dtype)
    # cuDNN runs float32 convolutions in TF32 by default (rel err ~3e-4 on an H100): the float32
    # case checks float32 arithmetic, so it turns TF32 off for its own duration.
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _check_cuda_dtype(unet_gpu, direction, inputs, want, want_dot, dtype, tol)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _check_cuda_dtype(unet_gpu, direction, inputs, want, want_dot, dtype, tol):
    move = lambda t: None if t is None else (t.to("cuda", dtype) if t.is_floating_point() else t.cuda())  # noqa: E731
    eps, eps_dot = lora_jvp(unet_gpu, {k: move(v) for k, v in direction.items()},
                            *(move(t) for t in inputs[:3]), class_labels=move(inputs[3]))
    assert eps_dot.dtype == dtype and eps_dot.is_cuda
    assert rel_err(eps.cpu(), want) <= tol
    assert rel_err(eps_dot.cpu(), want_dot) <= tol


# --- bad input ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    unet = make_lora_unet(TINY_CONFIGS["cross_attention"], dtype=torch.float64)
    return unet, random_direction(unet), random_inputs(unet)


def call(unet, direction, inputs, **kw):
    return lora_jvp(unet, direction, *inputs[:3], class_labels=inputs[3], **kw)


def test_bad_direction_keys(small):
    unet, direction, inputs = small
    key = next(iter(direction))
    with pytest.raises(ValueError, match="conv_in.weight"):
        call(unet, {**direction, "conv_in.weight": unet.conv_in.weight}, inputs)
    with pytest.raises(ValueError, match="no_such_param"):
        call(unet, {**direction, "no_such_param": torch.zeros(1)}, inputs)
    missing = dict(direction)
    del missing[key]
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        call(unet, missing, inputs)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        call(unet, {**direction, key: direction[key][..., :1]}, inputs)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        call(unet, {**direction, key: direction[key].float()}, inputs)
    with pytest.raises(ValueError, match="direction"):
        call(unet, [1, 2], inputs)


def test_unet_without_adapters():
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, sample_size=8,
                                **TINY_CONFIGS["cross_attention"]).double()
    with pytest.raises(ValueError, match="LoRA"):
        lora_jvp(unet, {}, *random_inputs(unet)[:3])


def camera_direction(unet, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
            for n, p in unet.named_parameters() if n.startswith("class_embedding.")}


def test_camera_mlp_tangent_matches_func_jvp_float64():
    """The lookahead tangent over every trainable part of the score model: LoRA factors and the
    camera MLP (class embedding), exact against torch.func.jvp over both."""
    unet = make_lora_unet(TINY_CONFIGS["camera_embedding"], dtype=torch.float64)
    lora_dir, cam_dir = random_direction(unet), camera_direction(unet)
    inputs = random_inputs(unet, batch=2)
    eps, eps_dot = lora_jvp(unet, lora_dir, *inputs[:3], class_labels=inputs[3], param_direction=cam_dir)
    want, want_dot = func_jvp(unet, {**lora_dir, **cam_dir}, inputs)
    assert rel_err(eps, want) <= 1e-10
    assert rel_err(eps_dot, want_dot) <= 1e-6
    # the camera part is a real share of the tangent, and the two parts add up (linearity)
    _, lora_only = lora_jvp(unet, lora_dir, *inputs[:3], class_labels=inputs[3])
    zero_lora = {k: torch.zeros_like(v) for k, v in lora_dir.items()}
    _, cam_only = lora_jvp(unet, zero_lora, *inputs[:3], class_labels=inputs[3], param_direction=cam_dir)
    assert cam_only.norm() > 0.05 * lora_only.norm()
    assert rel_err(lora_only + cam_only, eps_dot) <= 1e-10


def test_camera_tangent_bias_only_and_bad_keys():
    unet = make_lora_unet(TINY_CONFIGS["camera_embedding"], dtype=torch.float64)
    inputs = random_inputs(unet)
    lora_dir = {k: torch.zeros_like(v) for k, v in random_direction(unet).items()}
    bias_dir = {k: v for k, v in camera_direction(unet).items() if k.endswith("linear_2.bias")}
    _, got = lora_jvp(unet, lora_dir, *inputs[:3], class_labels=inputs[3], param_direction=bias_dir)
    _, want = func_jvp(unet, {**lora_dir, **bias_dir}, inputs)
    assert got.norm() > 0 and rel_err(got, want) <= 1e-6
    with pytest.raises(ValueError, match="conv_in.weight.*nn.Linear"):
        lora_jvp(unet, lora_dir, *inputs[:3], class_labels=inputs[3],
                 param_direction={"conv_in.weight": torch.zeros_like(unet.conv_in.weight)})
    with pytest.raises(ValueError, match="is a LoRA parameter"):
        lora_jvp(unet, lora_dir, *inputs[:3], class_labels=inputs[3], param_direction=dict(lora_dir))
    with pytest.raises(ValueError, match="not a parameter name"):
        lora_jvp(unet, lora_dir, *inputs[:3], class_labels=inputs[3], param_direction={"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="last_layer_only"):
        lora_jvp(unet, lora_dir, *inputs[:3], class_labels=inputs[3], param_direction=bias_dir,
                 last_layer_only=True)
    key = next(iter(bias_dir))
    with pytest.raises(ValueError, match="dtype"):
        lora_jvp(unet, lora_dir, *inputs[:3], class_labels=inputs[3],
                 param_direction={key: bias_dir[key].float()})
