#!/usr/bin/env bash
# The end-to-end demo: set up, write a synthetic nuclei project, train a U-Net (which also exports it
# to ONNX and to a validated bioimage.io package, predicts the test images through ONNX Runtime and
# evaluates them), then run idl-predict on the package as a lab PC would, with Monte Carlo uncertainty
# and evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
PROJECT="${1:-demo_project}"
rm -rf "$PROJECT"
idl-demo "$PROJECT"
idl-train "$PROJECT" --task semantic
PACKAGE="$(ls "$PROJECT"/model/*.bioimageio.zip)"
idl-predict --info "$PACKAGE"
idl-predict "$PACKAGE" "$PROJECT/test/image" --out "$PROJECT/predictions" --mc-samples 20 \
    --gt "$PROJECT/test/groundtruth"
echo
echo "trained model:       $PROJECT/model (model.onnx, model_mc.onnx, best.pt)"
echo "bioimage.io package: $PACKAGE"
echo "test predictions:    $PROJECT/results (uncertainty maps in $PROJECT/results/uncertainty)"
echo "evaluation report:   $PROJECT/evaluation/report.html"
echo "MLflow runs:         mlflow ui --backend-store-uri sqlite:///$PROJECT/mlflow.db"
