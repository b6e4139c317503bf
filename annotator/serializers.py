"""REST serializers."""

from __future__ import annotations

from rest_framework import serializers

from annotator.models import ActionLabel, Clip, Project, Proposal, Segment, Video


class ProjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = [
            "name",
            "slug",
            "description",
            "clip_model",
            "window_s",
            "stride_s",
            "sample_fps",
            "frames_per_clip",
            "background_threshold",
            "strategy",
        ]


class LabelSerializer(serializers.ModelSerializer):
    class Meta:
        model = ActionLabel
        fields = ["id", "name", "prompt", "color", "hotkey"]


class SegmentSerializer(serializers.ModelSerializer):
    label = serializers.CharField(source="label.name")

    class Meta:
        model = Segment
        fields = ["label", "start_s", "end_s", "confidence", "source", "model_tag"]


class VideoSerializer(serializers.ModelSerializer):
    segments = SegmentSerializer(many=True, read_only=True)

    class Meta:
        model = Video
        fields = [
            "id",
            "original_name",
            "size_bytes",
            "status",
            "error",
            "progress",
            "progress_message",
            "proposal_error",
            "duration",
            "fps",
            "frame_count",
            "width",
            "height",
            "rotation",
            "time_base",
            "start_time",
            "video_codec",
            "container",
            "created_at",
            "segments",
        ]


class ProposalSerializer(serializers.ModelSerializer):
    label = serializers.CharField(source="label.name", allow_null=True)

    class Meta:
        model = Proposal
        fields = ["rank", "label", "score", "probability", "model_tag"]


class ClipSerializer(serializers.ModelSerializer):
    proposals = ProposalSerializer(many=True, read_only=True)
    label = serializers.CharField(source="label.name", allow_null=True, default=None)

    class Meta:
        model = Clip
        fields = [
            "id",
            "index",
            "start_s",
            "end_s",
            "start_frame",
            "end_frame",
            "frame_indices",
            "status",
            "label",
            "proposals",
        ]
