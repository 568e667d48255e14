"""The MNIST CNN study as a library: the code that determines the pipeline's
results. The DVC stages (stages/) are thin command lines over it."""
