"""End-to-end paths built from the layers below (adaptation, estimation, degradations): the photo path."""
