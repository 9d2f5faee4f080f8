"""Developer demos, not shipped: ``make demo`` (a training pod mutated, a non-fault-tolerant
pod rejected), ``make demo-helm`` and ``make drill`` (a real kubelet preempts a training
Job). They run on the local control plane and reuse :mod:`testsupport`."""
