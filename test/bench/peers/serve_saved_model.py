"""What TensorFlow Serving does with a converted Tensile model, without Tensile or TF Serving: load the
SavedModel, call its serving_default signature (the one TF Serving's REST :predict calls) on raw IDX
test images preprocessed as preprocessing.json says (numpy), and print the accuracy and predictions.

usage: python serve_saved_model.py EXPORT_DIR SAVED_MODEL_DIR IMAGES.gz LABELS.gz N
"""
import gzip
import json
import os
import sys

import numpy as np
import tensorflow as tf

export_dir, saved_model, images_file, labels_file, count = sys.argv[1:6]
n = int(count)
with gzip.open(images_file) as f:
    raw = f.read()
rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
d = rows * cols
x = np.frombuffer(raw, dtype=np.uint8, count=n * d, offset=16).astype(np.float32).reshape(n, d)
with gzip.open(labels_file) as f:
    labels = np.frombuffer(f.read(), dtype=np.uint8, count=n, offset=8)
with open(os.path.join(export_dir, "preprocessing.json")) as f:
    pre = json.load(f)
for step in pre["steps"]:
    if step["type"] == "normalize":
        x = (x - np.asarray(step["offset"], np.float32)) * np.asarray(step["scale"], np.float32)
    elif step["type"] == "pca":
        components = np.asarray(step["components"], np.float32).reshape(d, step["k"])
        x = (x - np.asarray(step["mean"], np.float32)) @ components
    else:
        raise SystemExit(f"unknown preprocessing step {step['type']}")
x = x.reshape([n, *pre["modelInputShape"]])

loaded = tf.saved_model.load(saved_model)
serve = loaded.signatures["serving_default"]
(input_name, spec), = serve.structured_input_signature[1].items()
outputs = serve(**{input_name: tf.constant(x, dtype=spec.dtype)})
(output_name, probabilities), = outputs.items()
predicted = np.argmax(probabilities.numpy(), axis=-1)
print(json.dumps({
    "tensorflow": tf.__version__,
    "signature": {"input": input_name, "inputShape": spec.shape.as_list(), "output": output_name},
    "samples": n,
    "accuracy": float(np.mean(predicted == labels)),
    "predicted": predicted.tolist(),
}))
