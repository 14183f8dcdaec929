"""Stand-ins for tests and benchmarks, not for measuring: a protocol-faithful ADB device daemon on
127.0.0.1 (``adbd``) and a ``benchmark_model`` that runs the model with tflite-runtime on the host CPU
(``host_benchmark``); results made with them are labelled ``host CPU``."""
