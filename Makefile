# colearn-pipeline: the two entry points of a fresh machine are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export KEDRO_DISABLE_TELEMETRY := true
export MPLBACKEND := Agg

.PHONY: demo test install clean-data viz mlflow-ui paper

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kedro run --env demo
	@echo
	@echo "Table II (Markdown): data/08_reporting/table_ii.md   CSV: data/08_reporting/table_ii.csv"
	@echo "Ablation table:      data/08_reporting/table_ablation.md   paper protocol: table_ii_paper_protocol.md"
	@echo "Lesion metrics:      data/08_reporting/lesion_metrics.csv (per net and test study), table_lesions.md"
	@echo "Figures:             data/08_reporting/*.png"
	@echo "Preprocess manifest: data/08_reporting/preprocess_manifest.csv"
	@echo "MLflow runs:         make mlflow-ui, then open http://127.0.0.1:5000"
	$(VENV)/bin/colearn-phantom --size demo --studies 1 --seed 1 --quiet data/01_raw/predict
	$(VENV)/bin/kedro run --env demo --pipeline predict
	@echo
	@echo "Held-back study segmented from its DICOM (no report) by the colearn net:"
	@echo "  DICOM SEG:       $$(ls data/07_model_output/predict/seg/*.seg.dcm)"
	@echo "  DICOM SR:        $$(ls data/07_model_output/predict/sr/*.sr.dcm)  (TID 1500: MTV, SUVmax, SUVpeak, SUVmean, TLG)"
	@echo "  uncertainty map: $$(ls data/07_model_output/predict/uncertainty/*.nii.gz)  (entropy of the mean / ln 4, on the CT grid)"
	@echo "  disagreement:    $$(ls data/07_model_output/predict/disagreement/*.nii.gz)"
	@echo "  summary:         $$(ls data/07_model_output/predict/summary/*.json)  (per tumour: uncertainty, low_confidence)"
	@echo "  manifest:        data/07_model_output/predict/manifest.csv"

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

viz: $(STAMP)
	$(VENV)/bin/kedro viz run --no-browser --host 127.0.0.1

mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# The paper's protocol (conf/paper): cohort, preprocess, a printed plan, every net x seed trained
# (resumable: rerun after a preemption), then Table II. `make paper ARGS=--dry-run` prints the plan only.
paper: $(STAMP)
	@case " $(ARGS) " in *" --dry-run "*) ;; *) \
	  $(VENV)/bin/kedro run --env paper --pipeline phantom && \
	  $(VENV)/bin/kedro run --env paper --pipeline preprocess ;; esac
	$(PY) -m colearn_pipeline.training.cli --env paper --plan $(ARGS)
	@case " $(ARGS) " in *" --dry-run "*) ;; *) $(VENV)/bin/kedro run --env paper --pipeline train_eval ;; esac
