"""Plans (what a call will do) and the heuristics that choose them; no GPU needed."""
from pydg.scheduler.heuristics import candidate_plans, choose_plan, estimate_seconds
from pydg.scheduler.plan import GemmPlan

__all__ = ["GemmPlan", "candidate_plans", "choose_plan", "estimate_seconds"]
