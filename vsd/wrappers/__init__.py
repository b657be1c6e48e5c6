"""Train-mode model wrappers exposing what a criterion needs; in eval mode each returns plain logits."""
__all__: list = []
from vsd.wrappers.prob_bank import CompactProbBank, DenseProbBank, ProbBank, create_prob_bank  # noqa: E402
from vsd.wrappers.sla import SLAWrapper, rotate_batch  # noqa: E402
from vsd.wrappers.snapshot import PSKDSnapshot  # noqa: E402

__all__ += ["CompactProbBank", "DenseProbBank", "ProbBank", "create_prob_bank", "SLAWrapper", "rotate_batch",
            "PSKDSnapshot"]
from vsd.wrappers.teacher import TeacherOutput, TeacherWrapper, create_teacher  # noqa: E402
from vsd.wrappers.mid_feature import MidFeatureOutput, MidFeatureWrapper, USKDOutput, USKDWrapper  # noqa: E402
from vsd.wrappers.experts import ExpertsOutput, ExpertsWrapper  # noqa: E402

__all__ += ["TeacherOutput", "TeacherWrapper", "create_teacher", "MidFeatureOutput", "MidFeatureWrapper",
            "USKDOutput", "USKDWrapper", "ExpertsOutput", "ExpertsWrapper"]
from vsd.wrappers.dino_head import DINOHead  # noqa: E402
from vsd.wrappers.truncated_teacher import TruncatedTeacher, load_teacher_weights  # noqa: E402

__all__ += ["DINOHead", "TruncatedTeacher", "load_teacher_weights"]
from vsd.wrappers.contract import TimmContract  # noqa: E402

__all__ += ["TimmContract"]
