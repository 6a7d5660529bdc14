"""The distillation terms shared by knowledge storing and synthesis."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_per_sample(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) for each sample, in fp32 (also under mixed precision)."""
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return (teacher.exp() * (teacher - student)).sum(dim=1)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2-scaled KL of the student's to the teacher's softened distribution (Hinton et al.), batch mean."""
    return temperature**2 * kl_per_sample(student_logits, teacher_logits, temperature).mean()


def adversarial_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Minus the KL on the samples where student and teacher already agree on the top-1 class.

    Minimising it drives synthesis towards samples the prompt has not mastered yet.
    """
    agree = (student_logits.argmax(dim=1) == teacher_logits.argmax(dim=1)).float()
    return -(kl_per_sample(student_logits, teacher_logits) * agree).mean()
