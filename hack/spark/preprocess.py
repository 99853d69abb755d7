"""Tensile's preprocessing on Apache Spark: normalisation statistics and PCA at full scale (MLlib),
written with the training samples as record shards that Tensile trains from.

    spark-submit hack/spark/preprocess.py --input data.parquet --output /data/shards \
        --label label --features pixels --normalize standardize --components 50

Local runs need only `pip install pyspark` and a JDK; the same file runs on Spark on Kubernetes
(spark-submit --master k8s://... with the output on a shared volume or object store mount).

Input: Parquet or CSV (by extension); features are numeric columns, or one column of number arrays
or bytes. Output folder:
  part-NNNNN.bin       one per Spark partition: the records format (one label byte, then the raw
                       features as float32 little-endian, or uint8 with --dtype uint8)
  preprocessing.json   the fitted normalisation (x' = (x - offset) * scale) and PCA (mean, D x k
                       components, row-major), as Tensile's worker would fit them: population
                       statistics, the sign of each component fixed so its largest entry is positive
  meta.json            featureShape, classes, dtype, records
Tensile reads it as `dataset: {format: records, path: <output>, featureShape, classes, records: {dtype,
shardPattern: 'part-*.bin'}}`, and uses preprocessing.json instead of fitting its own.
"""
import argparse
import base64
import json
import os
import struct

import numpy as np
from pyspark.ml.feature import PCA, VectorAssembler
from pyspark.ml.functions import array_to_vector
from pyspark.ml.stat import Summarizer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BinaryType, DoubleType


def b64(values):
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def features_column(df, names):
    if len(names) == 1 and isinstance(df.schema[names[0]].dataType, (ArrayType, BinaryType)):
        column = df[names[0]]
        if isinstance(df.schema[names[0]].dataType, BinaryType):
            to_list = F.udf(lambda b: [float(v) for v in b], ArrayType(DoubleType()))
            column = to_list(column)
        return df.withColumn("_raw", array_to_vector(column.cast(ArrayType(DoubleType()))))
    return VectorAssembler(inputCols=names, outputCol="_raw").transform(df)


def normalisation(df, kind, d):
    offset = np.zeros(d)
    scale = np.ones(d)
    if kind == "none":
        return offset, scale
    stats = df.select(
        Summarizer.metrics("mean", "variance", "min", "max", "count").summary(df["_raw"]).alias("s")
    ).first()["s"]
    if kind == "scale":
        low = stats["min"].toArray()
        high = stats["max"].toArray()
        return low, np.where(high - low > 0, 1.0 / np.where(high - low > 0, high - low, 1), 1.0)
    n = stats["count"]
    # Spark's variance divides by n - 1; the worker's by n.
    std = np.sqrt(stats["variance"].toArray() * (n - 1) / n)
    return stats["mean"].toArray(), np.where(std > 1e-8, 1.0 / np.where(std > 1e-8, std, 1), 1.0)


def write_partition(output, dtype, d):
    def write(index, rows):
        path = os.path.join(output, f"part-{index:05d}.bin")
        count = 0
        with open(path, "wb") as out:
            for label, values in rows:
                out.write(struct.pack("B", label))
                array = np.asarray(values)
                out.write(array.astype(np.uint8 if dtype == "uint8" else "<f4").tobytes())
                count += 1
        if count == 0:
            os.remove(path)
        yield count

    return write


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--label", default="label")
    parser.add_argument("--features", nargs="*", help="feature columns (default: all but the label)")
    parser.add_argument("--feature-shape", nargs="*", type=int)
    parser.add_argument("--normalize", choices=["none", "scale", "standardize"], default="standardize")
    parser.add_argument("--components", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "uint8"], default="float32")
    parser.add_argument("--partitions", type=int, default=0)
    args = parser.parse_args()

    spark = SparkSession.builder.appName("tensile-preprocess").getOrCreate()
    reader = spark.read
    df = reader.parquet(args.input) if args.input.endswith(".parquet") else reader.csv(args.input, header=True, inferSchema=True)
    names = args.features or [c for c in df.columns if c != args.label]
    df = features_column(df, names).select(F.col(args.label).cast("int").alias("label"), "_raw")
    if args.partitions > 0:
        df = df.repartition(args.partitions)
    df = df.cache()
    d = len(df.first()["_raw"])
    offset, scale = normalisation(df, args.normalize, d)
    record = {"normalize": args.normalize, "offset": b64(offset), "scale": b64(scale)}
    if args.components > 0:
        offset_v, scale_v = offset.tolist(), scale.tolist()
        normalise = F.udf(
            lambda v: [(x - o) * s for x, o, s in zip(v.toArray().tolist(), offset_v, scale_v)],
            ArrayType(DoubleType()),
        )
        normalised = df.withColumn("_x", array_to_vector(normalise("_raw")))
        model = PCA(k=args.components, inputCol="_x", outputCol="_p").fit(normalised)
        components = np.array(model.pc.toArray(), copy=True)  # D x k, columns are components
        for j in range(components.shape[1]):
            if components[np.argmax(np.abs(components[:, j])), j] < 0:
                components[:, j] *= -1
        mean = normalised.select(Summarizer.mean(normalised["_x"]).alias("m")).first()["m"].toArray()
        explained = model.explainedVariance.toArray()
        n = normalised.count()
        total_variance = normalised.select(Summarizer.variance(normalised["_x"]).alias("v")).first()["v"].toArray().sum() * (n - 1) / n
        variances = (explained * total_variance).tolist()
        record["pca"] = {
            "k": args.components,
            "mean": b64(mean),
            "components": b64(components.reshape(-1)),
            "variances": variances,
            "explained": float(explained.sum()),
            "fittedOn": n,
        }
    os.makedirs(args.output, exist_ok=True)
    rows = df.select("label", F.col("_raw")).rdd.map(lambda r: (r[0], r[1].toArray()))
    counts = rows.mapPartitionsWithIndex(write_partition(args.output, args.dtype, d)).collect()
    classes = df.agg(F.max("label")).first()[0] + 1
    with open(os.path.join(args.output, "preprocessing.json"), "w") as out:
        json.dump(record, out)
    meta = {"featureShape": args.feature_shape or [d], "classes": classes, "dtype": args.dtype, "records": sum(counts)}
    with open(os.path.join(args.output, "meta.json"), "w") as out:
        json.dump(meta, out)
    print(json.dumps(meta))
    spark.stop()


if __name__ == "__main__":
    main()
