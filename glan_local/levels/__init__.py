"""The GLAN levels in pipeline order; each module holds its schema, asks, children and records.
Each level's prompt is prompts/<name>.j2. The judge runs only when quality.judge.enabled."""
from . import answers, judge, questions, subjects, syllabus, taxonomy

ORDER = (taxonomy, subjects, syllabus, questions, answers, judge)
BY_NAME = {m.name: m for m in ORDER}
