# Worker image for Dataflow and Flink: the Beam Python SDK image plus this project and its pinned dependencies.
# TensorFlow (extract_features, batch_predict) is heavy to install at worker start-up, so the jobs that run
# models should use this image (--sdk_container_image) rather than --setup_file. See docs/RUNNERS.md.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/cplanet:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/cplanet:0.1.0
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/cplanet

# Dependencies first, in their own layer, so code changes rebuild in seconds.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY pyproject.toml setup.py README.md ./
COPY schemas ./schemas
COPY partition_gen ./partition_gen
COPY pipelines ./pipelines
COPY trainer ./trainer
COPY imagery ./imagery
COPY sampledata ./sampledata
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import apache_beam, tensorflow, keras, s2sphere, pipelines.bucket_cells, imagery, pillow_heif, exifread; print('beam', apache_beam.__version__)"

# Keep the SDK image's entrypoint (/opt/apache/beam/boot): Dataflow and Flink start the SDK harness through it.
