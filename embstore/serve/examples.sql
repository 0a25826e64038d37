-- 1. what is stored: vectors per model and layer
SELECT model, weights, layer, count(*) AS images, any_value(len(vec)) AS channels
FROM activations GROUP BY ALL ORDER BY model, layer;

-- 2. ImageNet top-1 / top-5 error per model on labelled images
SELECT model_key, count(*) AS images, 1 - avg(top1_correct::INT) AS top1_error,
       1 - avg(top5_correct::INT) AS top5_error
FROM labelled_predictions GROUP BY model_key;

-- 3. failures that rank the true class lowest (seed 000 table 1)
SELECT imagenet_name(label_index) AS truth, imagenet_name(predicted_index) AS predicted,
       true_rank, round(true_prob, 4) AS p_truth, path
FROM labelled_predictions WHERE NOT top1_correct ORDER BY true_rank DESC LIMIT 10;

-- 4. classes closest to 'knot' (index 616) by prototype cosine, after `embstore analyze prototypes`
SELECT a.model_key, imagenet_name(b.label_index) AS class, cosine(a.mean, b.mean) AS similarity
FROM class_prototypes a JOIN class_prototypes b USING (model_key, layer, label_set)
WHERE a.label_set = 'imagenet1k' AND a.layer = 'hidden' AND a.label_index = 616 AND b.label_index <> 616
ORDER BY similarity DESC LIMIT 9;

-- 5. matching error and AUC per model and layer (seed 000 table 2)
SELECT model_key, layer, n_triplets, round(error, 3) AS error, round(auc, 3) AS auc
FROM matching_summary ORDER BY model_key, layer;
