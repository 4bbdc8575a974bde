"""Networks: masked Swin/ViT encoders, semantic attention, heads, and the SMART network."""
from .heads import DINOHead, ReconstructionHead
from .semantic_attention import ClassAttention, ClassAttentionBlock, SemanticAttention
from .smart import EXPORT_FORMAT, UNIT, SMARTNet, export_encoder, load_encoder
from .swin import MaskedSwinEncoder
from .vit import MaskedViTEncoder

__all__ = ["DINOHead", "ReconstructionHead", "ClassAttention", "ClassAttentionBlock", "SemanticAttention",
           "SMARTNet", "UNIT", "EXPORT_FORMAT", "export_encoder", "load_encoder", "MaskedSwinEncoder", "MaskedViTEncoder"]
