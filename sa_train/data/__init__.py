"""Training data: audio sources, decoding with timing crops, bad-file handling, the synthetic
dataset, Ray Data pipelines and pre-encoded latent shards.

    sources     folders, manifests, URIs -> AudioRecord (path, caption, fields, prompt)
    decode      read_window: one cropped, padded window of one file, or a BadFile
    bad_files   counting bad files, metrics, the max-bad-fraction limit
    batch       AudioBatch, the batch contract of both training stages
    pipeline    build_audio_dataset (Ray Data), iter_local_batches (no Ray)
    latents     the latent shard format and build_latent_dataset
    encode      encode_to_shards, run_encode (the job behind `sa-train encode`)
    encode_chunks  whole files through the encoder in chunks that match a whole-file encode
    check       `sa-train data check`
    synth       `sa-train data synth`
"""

# sa_train.config's schema imports this package's config module; importing the config package
# first means `import sa_train.data.config` works on its own instead of hitting that cycle.
import sa_train.config  # noqa: F401
