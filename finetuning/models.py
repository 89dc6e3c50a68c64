"""Model versions and everything that makes one: redaction rules, dataset snapshots, training runs.

A version is a base model plus, optionally, a LoRA adapter trained on our conversations. The row of
a training run is the source of truth for it; Celery messages carry only its id.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        ACTIVE = "active"
        RETIRED = "retired"

    name = models.SlugField(max_length=64, unique=True)
    base_model = models.CharField(max_length=300)
    adapter_path = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE, db_index=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    snapshot = models.ForeignKey(
        "DatasetSnapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="versions"
    )
    # Why an inference worker could not serve it (its adapter failed to load); empty while servable.
    serve_error = models.TextField(blank=True)
    # One entry per erasure that removed examples it was trained on: {"at", "examples", "snapshot"}.
    # The adapter still holds what it learnt from them, so the version page asks for a retrain.
    trained_on_erased_data = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # At most one version serves: two racing promotes, or a promote racing a rollback, cannot
            # leave two active even if the code that orders them has a bug.
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="active"), name="at_most_one_active_version"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Promotion(models.Model):
    """One promote or rollback. Replaying them gives the stack of versions that served in turn."""

    class Kind(models.TextChoices):
        PROMOTE = "promote"
        ROLLBACK = "rollback"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # A promote past the gate: the checks it overrode (as the version's metrics named them when it
    # was promoted) and the reason the admin wrote, kept for whoever asks later why it served.
    forced = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    refused_checks = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["id"]


class LoopLock(models.Model):
    """A row to lock: promotes and rollbacks lock "versions", run starts lock "runs", so two of
    them never interleave (a lock on an empty result set locks nothing on PostgreSQL)."""

    name = models.CharField(max_length=32, primary_key=True)

    def __str__(self) -> str:
        return self.name


class TrainingSettings(models.Model):
    """What an admin decides about training data, edited in the Django admin."""

    allow_customer_feedback_alone = models.BooleanField(
        default=False,
        help_text=(
            "Off: a bot reply is a good example only when an agent rated it good. On: a customer's "
            "thumbs-up alone is enough, also in conversations no agent has reviewed."
        ),
    )
    max_examples_per_customer = models.PositiveIntegerField(
        default=20,
        help_text="Most examples from one customer, and from all customers first seen from one address.",
    )
    heldout_fraction = models.FloatField(default=0.2)
    redact_conversations_after_days = models.PositiveIntegerField(
        default=0,
        help_text=(
            "Redact the text of messages, corrections, feedback comments and notes older than this many "
            "days, in place (names, e-mail addresses, numbers...). 0 keeps everything as written."
        ),
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "training settings"

    def __str__(self) -> str:
        return "Training settings"

    @classmethod
    def load(cls) -> TrainingSettings:
        row, _ = cls.objects.get_or_create(pk=1)
        return row


class RedactionPattern(models.Model):
    """A regular expression an admin adds; matches are replaced before text enters a dataset."""

    name = models.CharField(max_length=80)
    pattern = models.CharField(max_length=500)
    replacement = models.CharField(max_length=80, default="[redacted]")
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.name


class DatasetSnapshot(models.Model):
    """One build of the training data, frozen: what a run trained on, browsable before training."""

    created_at = models.DateTimeField(auto_now_add=True)
    content_hash = models.CharField(max_length=64, db_index=True)
    counts = models.JSONField(default=dict)  # by source, by split, pairs, skipped reasons
    params = models.JSONField(default=dict)  # the settings the build used
    # Erasures that removed some of its examples ({"at", "examples"}): a version trained on it later
    # (a run already under way) inherits them.
    erasures = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Dataset {self.pk} ({self.content_hash[:10]})"


class Example(models.Model):
    """A context → reply example, or a preference pair when ``rejected`` is set."""

    class Source(models.TextChoices):
        BOT_GOOD = "bot_good"
        AGENT = "agent"
        CORRECTION = "correction"
        PARAPHRASE = "paraphrase"  # a correction's question in the base model's words
        GENERAL = "general"

    class Split(models.TextChoices):
        TRAIN = "train"
        HELDOUT = "heldout"

    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.CASCADE, related_name="examples")
    source = models.CharField(max_length=16, choices=Source.choices)
    split = models.CharField(max_length=8, choices=Split.choices)
    chat = models.JSONField()  # the prompt as chat messages, exactly as the serving worker builds it
    prompt = models.TextField()  # the chat template applied, ending where the reply starts
    completion = models.TextField()  # the reply, with the template's end-of-turn markup
    reply = models.TextField()  # the reply alone, for evaluation
    rejected = models.TextField(blank=True)  # preference pairs: the bot's reply the correction replaced
    conversation_id = models.CharField(max_length=64, blank=True, db_index=True)
    customer_id = models.CharField(max_length=64, blank=True)
    message_ids = models.JSONField(default=list)  # lineage: the context's messages and the reply's
    # How the build made it beyond the conversation: "phrasings" (how many paraphrases a correction
    # got), "phrasing_of" (a paraphrase's question), "references" (answer, distractors, or absent:
    # the retrieved entries its system prompt carries) and "entries" (how many).
    augmentation = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    @property
    def is_pair(self) -> bool:
        return bool(self.rejected)


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    phase = models.CharField(max_length=32, blank=True)  # building, training, evaluating
    snapshot = models.ForeignKey(DatasetSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    config = models.JSONField(default=dict, blank=True)  # overrides of TrainingConfig
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    loss_history = models.JSONField(default=list, blank=True)  # [[step, loss], ...]
    tokens_per_s = models.FloatField(null=True, blank=True)
    eta_s = models.FloatField(null=True, blank=True)
    resumed_from_step = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.status})"

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


class DatasetBuild(models.Model):
    """One "Build a dataset to browse" request, from the click to its snapshot (or its error): what
    the overview page follows while a Celery worker builds it. The Celery message carries its id."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        BUILDING = "building"
        READY = "ready"
        FAILED = "failed"

    ACTIVE_STATUSES = (Status.QUEUED, Status.BUILDING)
    # What a build goes through, in order (finetuning.pipeline.build_execute), as the page says it.
    PHASES = {
        "tokenizer": "Loading the tokenizer",
        "general": "The base model writes its general replies",
        "examples": "Collecting, redacting and rendering the examples",
    }

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # What the builder does now (a key of PHASES), and how many phases it has passed.
    phase = models.CharField(max_length=32, blank=True)
    phases_done = models.PositiveSmallIntegerField(default=0)
    snapshot = models.ForeignKey(
        DatasetSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="builds"
    )
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Every write touches it: a build unchanged for longer than FINETUNING_BUILD_STALE_S lost its worker.
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Dataset build {self.pk} ({self.status})"
