-- The fashion seed's pipeline in SQL: find the garments in a photo (DETECT), cut each one out
-- (SEGMENT), and read its attributes and its colour from the masked crop (PREDICT).
--
-- The photos are canvases of real product photos, composed with known boxes and masks (seeded;
-- train and test canvases never share a product). Make them first, from the repository root:
--   python -m pixql.canvases --data ../shared/datasets --out canvases/train --n 200 --split train
--   python -m pixql.canvases --data ../shared/datasets --out canvases/test --n 60 --split test
-- then run, naming the detector's epochs (6 take about 15 minutes on 2 CPU cores):
--   pixql --db fashion.duckdb --set canvases=canvases --set epochs=6 run examples/fashion_attributes.sql

COPY regions_train OPTIONS (overwrite=True) FROM '{canvases}/train/regions.csv';
COPY regions_test OPTIONS (overwrite=True) FROM '{canvases}/test/regions.csv';
-- one row per pasted product: its canvas, its box and mask, and the product's labels
CREATE OR REPLACE TABLE train AS
  SELECT *, struct_pack(x1 := x1, y1 := y1, x2 := x2, y2 := y2) AS box FROM regions_train;
CREATE OR REPLACE TABLE test AS
  SELECT *, struct_pack(x1 := x1, y1 := y1, x2 := x2, y2 := y2) AS box FROM regions_test;

-- 1. A detector of the products' top category (Apparel, Footwear, Accessories, ...), and the two
--    attribute models of the seed, trained on the masked crops of the true boxes.
BUILD MODEL garments USING EfficientNet_Lite0
  OPTIONS (task='detection', box_col='box', label_col='div_l', epochs={epochs}, overwrite=true)
  AS SELECT image, box, div_l FROM train;
BUILD MODEL tags_model USING EfficientNet_Lite0
  OPTIONS (label_col='tags', multi_label=true, box_col='box', mask_col='mask', overwrite=true)
  AS SELECT * FROM train;
BUILD MODEL colour_model USING EfficientNet_Lite0
  OPTIONS (label_col='color', box_col='box', mask_col='mask', overwrite=true)
  AS SELECT * FROM train;
EVALUATE USING garments AS SELECT image, box, div_l FROM test;

-- 2. The pipeline on the test canvases: each canvas with the product we look for in it.
CREATE OR REPLACE TABLE wanted AS
  SELECT image, img_prod_nm AS product, div_l AS category FROM test WHERE region = 0;
CREATE OR REPLACE TABLE found AS DETECT USING garments AS SELECT * FROM wanted;
-- keep the most confident box whose label is the product's category
CREATE OR REPLACE TABLE kept AS
  SELECT image, product, category, box, score AS box_score FROM found WHERE label = category
  QUALIFY row_number() OVER (PARTITION BY image ORDER BY score DESC) = 1;
CREATE OR REPLACE TABLE cut AS SEGMENT OPTIONS (box_col='box') AS SELECT * FROM kept;
CREATE OR REPLACE TABLE tagged AS
  PREDICT USING tags_model OPTIONS (box_col='box', mask_col='mask', result_col='attributes',
    score_col='attributes_score') AS SELECT * FROM cut;
CREATE OR REPLACE TABLE fashion AS
  PREDICT USING colour_model OPTIONS (box_col='box', mask_col='mask', result_col='colour', score_col='colour_score')
  AS SELECT * FROM tagged;

SELECT image, product, category, box, attributes, colour FROM fashion ORDER BY image;
-- each garment found, cut out along its mask as the attribute models saw it, with their answers
PRINT IMAGE OPTIONS (box_col='box', mask_col='mask', draw='crop')
  AS SELECT image, box, mask, product, attributes, colour FROM fashion ORDER BY image LIMIT 6;
