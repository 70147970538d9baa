"""pixql's learning layer: base models, training and inference over image files.

It knows nothing of SQL or DuckDB. Modules, lowest first:
    images    read_image: any image file -> upright RGB, or a DataError naming the file
    bases     base-model names and aliases -> BaseSpec (imports no torch)
    networks  rebuild an nn.Module from its JSON recipe; the SimpleCNN
    weights   pretrained weights: the Lite0 package, the local hub cache, a checkpoint file
    data      preprocessing, transforms, DataLoader over (path, label) rows
    runtime   device, precision, batched no-grad passes
    trained   TrainConfig, the rows, history lines, metrics, TrainedModel (imports no torch)
    linear_head   the linear mode's head: scipy's L-BFGS on numpy, cross-validated L2 (no torch)
    cached_linear a linear BUILD from cached embeddings, without torch or timm
    top_tune  train_mode='top': the last block tuned on the frozen rest's activations
    train     train_classifier / continue_training -> TrainedModel
    infer     Classifier, imagenet_classifier
torch and timm are imported by the modules that need them, never by this package itself.
"""
