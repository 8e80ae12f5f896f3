"""Pictures for a person to review a preprocessed cohort (:mod:`colearn_pipeline.review.gallery`)."""

from colearn_pipeline.review.gallery import GalleryParams, choose_slices, gallery_html, review_order, study_strip

__all__ = ["GalleryParams", "choose_slices", "gallery_html", "review_order", "study_strip"]
