"""Evaluation of generated talking-head videos: lip sync (offline score, SyncNet LSE-C/D), PSNR/SSIM/FVD
against references, temporal stability, and a Markdown/PNG report.  See docs/evaluation.md."""

from avatar_gen.evaluation.faces import FaceTrack, detect_faces, track_face
from avatar_gen.evaluation.fvd import VideoFeatureExtractor, feature_frechet_distance, frechet_distance
from avatar_gen.evaluation.heldout import matches_heldout, read_heldout_ids
from avatar_gen.evaluation.lipsync import (
    OfflineSyncResult, lagged_correlation, mouth_opening, offline_sync_from_signals,
)
from avatar_gen.evaluation.mfcc import mfcc
from avatar_gen.evaluation.pipeline import aggregate, evaluate_clip, evaluate_directory
from avatar_gen.evaluation.quality import compare_to_reference, psnr, ssim, temporal_stability
from avatar_gen.evaluation.report import render_markdown, write_report
from avatar_gen.evaluation.syncnet import LSEResult, SyncNet, compute_lse, load_syncnet, syncnet_face_crops

__all__ = [
    "FaceTrack", "LSEResult", "OfflineSyncResult", "SyncNet", "VideoFeatureExtractor", "aggregate",
    "compare_to_reference", "compute_lse", "detect_faces", "evaluate_clip", "evaluate_directory",
    "feature_frechet_distance", "frechet_distance", "lagged_correlation", "load_syncnet", "matches_heldout", "mfcc",
    "mouth_opening", "offline_sync_from_signals", "psnr", "read_heldout_ids", "render_markdown", "ssim",
    "syncnet_face_crops", "temporal_stability", "track_face", "write_report",
]
