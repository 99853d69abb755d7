# Pinned tool versions, read by hack/install-tools.sh and hack/tools.ts. Bump KUBE_VERSION together with
# hack/k8s/go.mod (the require line and every replace directive).
KUBE_VERSION=v1.36.3
HELM_VERSION=v3.22.0
# Kueue for test/integration/kueue.test.ts, built from the Go module proxy by hack/install-tools.sh.
KUEUE_VERSION=v0.17.0
# FerretDB v1: the MongoDB wire protocol over an SQLite folder (no PostgreSQL needed), for the tests.
FERRETDB_VERSION=v1.24.2

# The native TensorFlow backend (hack/install-tensorflow.sh, the worker images). libtensorflow comes
# from these PyPI wheels, verified against the sha256 below; the tfjs-node addon is built against it.
# TF 2.21 needs glibc >= 2.27. The cp311 wheels are used whatever the local Python: only the two
# libtensorflow*.so.2 files and the C headers are taken, and those do not depend on Python.
TF_VERSION=2.21.0
TF_WHEEL_TAG=cp311-cp311-manylinux_2_27_x86_64
TF_CPU_WHEEL_SHA256=2b847d217b02ee7731ed91431daf3250daa0196c3c94614d23be27232e6e5b6c
TF_GPU_WHEEL_SHA256=9056fbc9ba04235810b71ae6cbd958a196e8804fb53bbcffbf3e23b56155f124
# Must match the lock file's @tensorflow/tfjs-node and @tensorflow/tfjs-node-gpu.
TFJS_NODE_VERSION=4.22.0
# The CUDA 12 / cuDNN 9 runtime for the GPU build: the "and-cuda" extra of tensorflow 2.21.0
# (its wheel METADATA), resolved to the newest matching wheels on 2026-12-01. ~2.7 GB of wheels.
NVIDIA_CU12_WHEELS="
nvidia-cublas-cu12==12.9.3.13 d7d51055f161b317c7105ddaae90e71eda059026074ffef93cf7cde2886bfe72
nvidia-cuda-cupti-cu12==12.8.90 ea0cb07ebda26bb9b29ba82cda34849e73c166c18162d3913575b0c9db9a6182
nvidia-cuda-nvcc-cu12==12.9.86 5d6a0d32fdc7ea39917c20065614ae93add6f577d840233237ff08e9a38f58f0
nvidia-cuda-nvrtc-cu12==12.9.86 210cf05005a447e29214e9ce50851e83fc5f4358df8b453155d5e1918094dcb4
nvidia-cuda-runtime-cu12==12.9.79 25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3
nvidia-cudnn-cu12==9.28.0.42 9ff58b7f36dacd0a93e89f8f2957b52466889217963701daa15e577317cfa375
nvidia-cufft-cu12==11.4.1.4 c67884f2a7d276b4b80eb56a79322a95df592ae5e765cf1243693365ccab4e28
nvidia-curand-cu12==10.3.10.19 49b274db4780d421bd2ccd362e1415c13887c53c214f0d4b761752b8f9f6aa1e
nvidia-cusolver-cu12==11.7.5.82 15da72d1340d29b5b3cf3fd100e3cd53421dde36002eda6ed93811af63c40d88
nvidia-cusparse-cu12==12.5.10.65 73060ce019ac064a057267c585bf1fd5a353734151f87472ff02b2c5c9984e78
nvidia-nccl-cu12==2.32.3 bb94b2348e4861d5e8aa00b36c3d12d9bdf9c6369b82cbb723de0b582280a21c
nvidia-nvjitlink-cu12==12.9.86 e3f1171dbdc83c5932a45f0f4c99180a70de9bd2718c1ab77d14104f6d7147f9
"
# The TensorFlow.js converter for the TensorFlow Serving check (hack/install-tfjs-converter.sh, the
# serving-conversion bench; never a dependency): tensorflowjs 4.22 imports tensorflow_decision_forests,
# whose 1.12 pins tensorflow 2.19, so the set is pinned together (resolved by pip on 2026-12-01); ydf
# 0.16 (pip's pick) needs protobuf 6, which tensorflow 2.19 refuses: 0.12 imports.
TFJS_CONVERTER_PIP="tensorflowjs==4.22.0 tensorflow==2.19.0 tf-keras==2.19.0 tensorflow-decision-forests==1.12.0 ydf==0.12.0"
