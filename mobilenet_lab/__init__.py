"""mobilenet_lab: train, evaluate, benchmark and export the MobileNet family on CIFAR-100."""
