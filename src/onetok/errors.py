"""Every error onetok raises, defined once, grouped by the layer that raises it.

All are ValueError subclasses: the CLI turns them into one line and exit status 2.
This module imports nothing, so every layer may use it.
"""

# ---------------------------------------------------------------- configs, checkpoints, models


class ConfigError(ValueError):
    """A model config tree, or a training config or override, that cannot be used."""


class CheckpointError(ValueError):
    """A folder, file or hub id that holds no loadable checkpoint, or one that does not fit the current run."""


class TokenizerError(ValueError):
    """Bad images or token ids given to a tokenizer."""


class GeneratorError(ValueError):
    """Bad arguments given to a generator."""


class PrecisionError(ValueError):
    """An unknown precision name."""


# ---------------------------------------------------------------- data


class ImageReadError(ValueError):
    """A file that is missing, unreadable or not an image."""


class DatasetError(ValueError):
    """A dataset path or file that cannot be used."""


class EvalInputError(ValueError):
    """An image set that is empty, missing or of an unusable form."""


class FetchError(ValueError):
    """The photo pool could not be fetched (no apt-get, package version missing, ...)."""


class CorruptShardError(DatasetError):
    """A tar shard that cannot be read to its end (truncated, scrambled)."""


class TokenDatasetError(ValueError):
    """A token folder that is missing, incomplete or inconsistent."""


class TokenizerMismatchError(TokenDatasetError):
    """Tokens made by another tokenizer than the one a generator is trained for."""


# ---------------------------------------------------------------- training


class TrainingError(ValueError):
    """A training run that cannot start as configured."""


class OutputInUseError(ValueError):
    """Another live training run holds the output folder."""


class GeneratorRunError(ValueError):
    """A generator config that does not fit its token folder or tokenizer."""


class LossConfigError(ValueError):
    """Bad loss settings, or inputs of shapes a loss cannot take."""


class PerceptualConfigError(ValueError):
    """An unknown perceptual loss kind, or images the loss cannot take."""


class DiscriminatorInputError(ValueError):
    """Images of the wrong shape given to the discriminator."""


class WeightsNotFoundError(ValueError):
    """Pretrained weights that are neither on disk nor downloadable."""


# ---------------------------------------------------------------- evaluation


class InceptionWeightsError(ValueError):
    """Weights that are missing, of the wrong layout, or lack a needed layer."""


class LPIPSWeightsError(ValueError):
    """LPIPS weights that are missing or of the wrong layout."""


class StatisticsError(ValueError):
    """Statistics or feature sets that cannot be compared or read."""


class RateQualityError(ValueError):
    """Token budgets or a model that a rate–quality evaluation cannot use."""


# ---------------------------------------------------------------- the Pipeline and its front-ends


class PipelineError(ValueError):
    """Something a Pipeline cannot do with what it was given; the message is one line."""


class CommandError(ValueError):
    """A user error the CLI reports in one line."""


class SampleError(ValueError):
    """Arguments `onetok sample` cannot use."""


class PretokenizeError(ValueError):
    """Settings that cannot be used, or an output folder made with other settings."""


class AppInputError(ValueError):
    """Something the user gave the app that it cannot use; the message is shown in the page."""


class UploadError(AppInputError):
    """An upload that is not an image, or too large."""


class TokenEditError(AppInputError):
    """A token position or id out of range."""


class GenerationError(AppInputError):
    """Generation settings out of range."""


class ModelLoadError(AppInputError):
    """A tokenizer or generator the app cannot serve."""
