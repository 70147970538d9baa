"""Building networks from their JSON recipe: timm models, and the classic SimpleCNN.

A recipe is {'arch': <timm name or 'simple_cnn'>, 'num_classes': n, ...}: enough to rebuild
the nn.Module with random weights, into which a saved state_dict is then loaded.
"""

import torch
from torch import nn

SIMPLE_CNN = "simple_cnn"


class SimpleCNN(nn.Module):
    """Three conv + max-pool blocks (16/32/64 filters), a 512-unit dense layer with dropout.

    The small Keras tutorial CNN, trained from scratch. It offers the parts of timm's model
    interface pixql uses (forward_features, forward_head, get_classifier, reset_classifier,
    pretrained_cfg), so training and inference need no special case for it.
    """

    def __init__(self, num_classes=2, input_size=150, drop_rate=0.5):
        super().__init__()
        blocks = []
        channels, side = 3, input_size
        for width in (16, 32, 64):
            blocks += [nn.Conv2d(channels, width, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels, side = width, (side - 2) // 2
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels * side * side, 512)
        self.drop = nn.Dropout(drop_rate)
        self.num_features = 512
        self.num_classes = num_classes
        self.classifier = nn.Linear(512, num_classes) if num_classes else nn.Identity()
        self.pretrained_cfg = {
            "architecture": SIMPLE_CNN,
            "classifier": "classifier",
            "num_classes": num_classes,
            "input_size": (3, input_size, input_size),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "squash",  # the Keras recipe resizes, it does not crop
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
        }

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x, pre_logits=False):
        x = self.drop(torch.relu(self.fc(torch.flatten(x, 1))))
        return x if pre_logits else self.classifier(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.classifier

    def reset_classifier(self, num_classes):
        self.num_classes = num_classes
        self.classifier = nn.Linear(512, num_classes) if num_classes else nn.Identity()


# Architectures pixql builds itself, by the recipe's 'arch'; any other arch is a timm model.
# A family offers timm's model interface (forward_features, forward_head, get_classifier,
# reset_classifier, pretrained_cfg), so that training and inference need no special case.
# Changing a family's layers changes its parameter count: bump weight_files.FACTS_FORMAT.
FAMILIES = {
    SIMPLE_CNN: lambda network: SimpleCNN(int(network["num_classes"]), int(network.get("input_size", 150))),
}


def create_network(network):
    """A randomly initialised nn.Module from its recipe."""
    build = FAMILIES.get(network["arch"])
    if build is not None:
        return build(network)
    import timm

    return timm.create_model(network["arch"], pretrained=False, num_classes=int(network["num_classes"]))


def classifier_keys(model):
    """state_dict keys of the classification head, from timm's pretrained config."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    keys = set()
    for name in names:
        keys |= {f"{name}.{k}" for k in ("weight", "bias")}
    return keys


def linear_head(model):
    """The head as one nn.Linear over forward_head(pre_logits=True), or None if it is not."""
    head = model.get_classifier()
    return head if isinstance(head, nn.Linear) else None


def stages(model):
    """The network's stages, input side first, as (module name, output stride): timm's
    feature_info (what `features_only` and `out_indices` count), or () for a family without one."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return ()
    # some families name hook points that are no module of their own (HRNet's 'stem', Twins'
    # 'block.0'): those cannot mark where freezing ends
    modules = dict(model.named_modules())
    return tuple((d["module"], int(d["reduction"])) for d in info if d["module"] in modules)


def stages_up_to_stride(model, stride):
    """How many of the first stages work at an output stride of at most `stride`."""
    return sum(1 for _, reduction in stages(model) if reduction <= stride)


def freeze_stages(model, count):
    """Stop training the stem and the first `count` stages: their parameters keep their
    weights (requires_grad off), and autograd then stops before them, which skips the
    backward pass of the highest-resolution layers. Returns the parameters frozen."""
    if count <= 0:
        return 0
    end = stages(model)[count - 1][0]
    frozen, reached = 0, False
    # named_modules is in registration order, which is forward order for timm's stem and stages;
    # the end module's own children come right after it
    for name, module in model.named_modules():
        if reached and not name.startswith(end + "."):
            break
        reached = reached or name == end
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen
