from django.contrib import admin

from reviews.models import PRReview


@admin.register(PRReview)
class PRReviewAdmin(admin.ModelAdmin):
    list_display = ("repo", "pr_number", "work_item", "model_used", "created_at")
    search_fields = ("repo", "=work_item__id")
    list_select_related = ("work_item",)
