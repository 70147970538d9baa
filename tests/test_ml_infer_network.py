"""The inference network rebuilt from a model's recipe and weights (ml/infer.py)."""

import pytest
import torch
from torch import nn

from pixql.errors import StoreError
from pixql.ml.infer import inference_network
from pixql.ml.networks import create_network


def _saved(arch, num_classes=3, seed=0):
    torch.manual_seed(seed)
    model = create_network({"arch": arch, "num_classes": num_classes}).eval()
    for m in model.modules():  # statistics as after training, so that folding is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch, side", [("tf_efficientnet_lite0", 96), ("resnet18", 96), ("simple_cnn", 150)])
def test_rebuilt_network_gives_the_saved_networks_outputs(arch, side):
    model, state = _saved(arch)
    rebuilt = inference_network({"arch": arch, "num_classes": 3}, state, ["a", "b", "c"])
    if arch != "simple_cnn":  # its batch norms folded into the convolutions
        assert not any(isinstance(m, nn.BatchNorm2d) for m in rebuilt.modules())
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=1e-4, atol=1e-4)
    assert all(v.equal(state[k]) for k, v in model.state_dict().items())  # the saved tensors untouched


def test_weights_of_another_network_are_named():
    _, state = _saved("resnet18")
    with pytest.raises(StoreError, match="do not fit the tf_efficientnet_lite0 network"):
        inference_network({"arch": "tf_efficientnet_lite0", "num_classes": 3}, state, ["a", "b", "c"])


def test_a_class_list_of_another_length_is_named():
    _, state = _saved("resnet18")
    with pytest.raises(StoreError, match="3 outputs but 2 classes"):
        inference_network({"arch": "resnet18", "num_classes": 3}, state, ["a", "b"])


@pytest.mark.parametrize("arch, side", [("tf_efficientnet_lite0", 96), ("simple_cnn", 150)])
def test_the_head_runs_in_fp32_under_bf16_autocast(arch, side):
    """The body may run in bf16, the logits do not come in bf16 steps (~3 digits): photos would
    share scores exactly."""
    from pixql.ml.infer import logits

    model, state = _saved(arch, num_classes=5)
    network = inference_network({"arch": arch, "num_classes": 5}, state, list("abcde"))
    x = torch.randn(4, 3, side, side)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = logits(network, x)
        body = network.forward_features(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, out.bfloat16().float())  # values between bf16's steps: an fp32 head
    with torch.inference_mode():
        assert torch.allclose(out, network.forward_head(body.float()), atol=1e-5)


def test_a_network_whose_features_are_not_one_tensor_runs_whole():
    """timm's CrossViT hands its head a list of branches: logits() then leaves the head as it is."""
    from pixql.ml.infer import logits

    class Branches(nn.Module):
        def forward_features(self, x):
            return [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]

        def forward_head(self, branches):
            return branches[0] + branches[1]

    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(logits(Branches(), x), x.mean(dim=(2, 3)) + x.amax(dim=(2, 3)))


@pytest.mark.parametrize("runtime", ["torch", "auto"])
def test_a_dropped_classifier_is_freed_at_once(runtime):
    """A Ray worker keeps the models of its last statements and drops older ones: a Classifier in
    a reference cycle waited for a full garbage collection, which a worker idle between
    statements seldom ran (a QA pass saw a worker's memory grow by a model a statement)."""
    import gc
    import weakref

    from pixql.ml.data import preprocessing_for
    from pixql.ml.infer import Classifier

    model, state = _saved("tf_efficientnet_lite0")
    classifier = Classifier({"arch": "tf_efficientnet_lite0", "num_classes": 3}, state, ["a", "b", "c"],
                            preprocessing_for(model, 64), device="cpu", runtime=runtime)
    network = weakref.ref(classifier.model)
    gc.disable()  # (only reference counting frees it)
    try:
        del classifier
        assert network() is None
    finally:
        gc.enable()
